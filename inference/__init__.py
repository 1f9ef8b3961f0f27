"""The algorithms that fit and score the models (installed as ``probgen.inference``)."""
