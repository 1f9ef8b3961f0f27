"""The networks every model shares: plain ``nn.Module`` encoders, decoders, generators and
discriminators. Models take them as arguments; nothing here knows about Pyro or losses.

Shapes are given as (batch, ...) in the docstrings.
"""
