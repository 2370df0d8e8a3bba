"""zoo: the training side of bioviz (paper models, tasks, data, registry, CLI).

``zoo.load_model(name)``, ``zoo.list_models()``, ``zoo.model_info(name)``, ``zoo.evaluate(name)`` and
``zoo.download_weights(name)`` come from ``zoo.registry``, imported on first use so that ``import zoo`` stays light.
"""

__version__ = "0.1.0"

_REGISTRY_API = ("download_weights", "evaluate", "list_models", "load_model", "model_info")


def __getattr__(name):
    if name in _REGISTRY_API:
        from zoo import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_REGISTRY_API])
