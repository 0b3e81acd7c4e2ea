"""Sample filters over the judge's scores: threshold and category rules (``filters.rules``), their
yields per rule and dataset and the same rules in DuckDB SQL (``filters.selection``)."""
