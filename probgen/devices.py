"""Devices by name: what ``--device`` and the estimators' ``device=`` accept."""

from __future__ import annotations

from probgen.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(name: str | None = "auto"):
    """``"auto"`` -> CUDA when present, else CPU; ``"cuda"`` without a GPU is an error."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name} was asked for, but torch sees no CUDA device on this machine "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). "
                "Use --device cpu, or --device auto to take a GPU only where there is one."
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"--device must be one of cpu, cuda, cuda:N, auto; got {name!r}.")
