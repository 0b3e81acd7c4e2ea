"""`curate run --stage screen`: fingerprints, near-duplicates, benchmark contamination, copied
edits and camera-only motion, found between the probe and the judge (see stages/screen/stage.py)."""
