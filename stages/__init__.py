"""Pipeline stages, one folder each: ``core.py`` (plain functions over Arrow/NumPy/torch, tested
without Ray), ``stage.py`` (its ``pipeline.stage.Stage`` declaration) and ``config.py`` (its config
section). ``media`` is shared by the stages that open media; the filter stage lives in ``filters/``."""
