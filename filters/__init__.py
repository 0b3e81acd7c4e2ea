"""Sample filters over the judge's scores (threshold and category rules) — see the judge issue."""
