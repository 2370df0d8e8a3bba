"""zoo: the training side of bioviz (paper models, tasks, data, registry, CLI)."""

__version__ = "0.1.0"
