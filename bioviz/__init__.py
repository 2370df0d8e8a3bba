"""bioviz: inspection of vision models (stimuli, receptive fields, tuning, pictures).

Works on any torch module and never imports ``zoo``; needs only torch, numpy and matplotlib (and Lightning for
``bioviz.callbacks``). Modules: ``stimuli``, ``hooks``, ``tuning``, ``plot``, ``callbacks``.
"""

__version__ = "0.1.0"
