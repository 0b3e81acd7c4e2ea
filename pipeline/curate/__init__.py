"""The `curate` app: the stage registry, the runner, the CLI, the config tree, status, report and demo. It stands on the kernel (pipeline/*.py) and the stages; nothing below imports it."""
