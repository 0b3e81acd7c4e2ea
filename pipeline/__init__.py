"""Run orchestration: config, Ray runtime, stage runner and the ``curate`` CLI."""
