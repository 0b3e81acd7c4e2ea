"""Manifest schemas (Arrow/Parquet), partitioned atomic table I/O and the DuckDB catalog."""
