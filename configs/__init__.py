"""The configs of the paper models, for ``bioviz fit -c configs/...``.

This folder is also installed as the package ``zoo.configs`` (pyproject.toml), so that ``bioviz zoo reproduce``
finds the configs of a zoo entry's recipe in a wheel install as well as in a checkout.
"""
