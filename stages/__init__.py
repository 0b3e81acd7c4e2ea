"""Pipeline stages. Each stage is a plain function core (tested without Ray) plus a thin Ray
Data adapter in ``pipeline.runner``."""
