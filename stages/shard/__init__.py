"""WebDataset shards of the encoded keys, their index, and the tools that check and show them.

- ``layout``: tar member names, the ``K.json`` document, deterministic tar bytes.
- ``plan``: which key goes to which shard (driver, DuckDB metadata only).
- ``write``: one shard from its plan rows and the encoded parts' tensor blobs.
- ``stage``: the stage declaration (plan, one Ray task per shard, index tables ``shards`` / ``shard_keys``).
- ``verify``: ``curate verify``; ``preview``: ``curate preview``.
"""
