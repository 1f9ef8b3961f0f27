"""Generative models written as programs (installed as ``probgen.models``)."""
