"""probgen: generative models as programs, fitted and scored on one evaluation layer.

The package keeps its import light: torch, pyro and plotting are imported by the parts
that use them, so ``probgen --help`` answers at once and nothing runs at import time.

Layout (see the README):

* :mod:`probgen.data`       named data sets -> tensors on a device
* :mod:`probgen.models`     generative models written as programs
* :mod:`probgen.inference`  the algorithms that fit and score them
* :mod:`probgen.eval`       the one evaluation layer (bounds, likelihoods, sample metrics)
* :mod:`probgen.runs`       run folders, checkpoints, seeds and devices
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
