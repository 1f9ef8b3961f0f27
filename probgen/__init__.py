"""probgen: generative models as programs, fitted and scored on one evaluation layer.

The package keeps its import light: torch, pyro and plotting are imported by the parts
that use them, so ``probgen --help`` answers at once and nothing runs at import time.

Layout (see the README):

* :mod:`probgen.data`       named data sets -> tensors on a device
* :mod:`probgen.models`     generative models written as programs
* :mod:`probgen.inference`  the algorithms that fit and score them
* :mod:`probgen.eval`       the one evaluation layer (bounds, likelihoods, sample metrics)
* :mod:`probgen.runs`       run folders, checkpoints, seeds and devices
* :mod:`probgen.programs`   the user's own Pyro programs as models

From Python, :func:`probgen.train`, :func:`probgen.evaluate` and :func:`probgen.compare` do
what ``probgen train``, ``eval`` and ``compare`` do, and return the models and the values.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "train", "evaluate", "compare"]

# probgen.train, probgen.evaluate and probgen.compare, imported when first used
_LAZY = {"train": "probgen.training", "evaluate": "probgen.training", "compare": "probgen.comparison"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'probgen' has no attribute {name!r}")
