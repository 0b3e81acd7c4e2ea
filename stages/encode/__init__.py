"""The encode stage: every selected sample pre-computed once, so the trainer never decodes video
or runs an encoder.

- ``frames``: which native frames a clip takes (fps grid, 4n+1 counts, speed perturbation).
- ``buckets``: 480p-class aspect buckets; resize-to-cover and centre-crop.
- ``decode``: media -> the clips of a sample's keys (edit pairs, raw clips' pretext variants).
- ``encoders``: Wan2.1 VAE, SigLIP, umT5 loaded once from local directories.
- ``core``: decoded samples -> ``encoded`` rows (safetensors blobs), bad samples isolated.
- ``schema``: the ``encoded`` table, keys, tensor packing.
- ``stage``: the stage declaration (two phases: CPU decode tasks feeding encoder actors).
- ``config``: the ``encode:`` section.

Tiny random checkpoints of the three encoders (tests, ``make demo``): ``pipeline.curate.demo.tiny_encoders``.
"""
