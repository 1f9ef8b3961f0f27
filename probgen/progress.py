"""Progress bars for long jobs: drawn on a terminal, silent in logs, in CI and with ``--quiet``.

Every long loop of probgen (SVI epochs, GAN steps, EM iterations, the IWAE and AIS passes of
an evaluation, the stages of ``compare``) takes a ``progress`` option and asks :func:`bar`
for its bar, which shows the count, the rate and the time left (tqdm). Whether one is drawn:

1. ``progress=False`` (what the commands' ``--quiet`` passes down): never.
2. ``$PROBGEN_PROGRESS=1`` draws bars even where the stream is not a terminal (a log that
   wants them, a test); ``$PROBGEN_PROGRESS=0`` never draws them.
3. Otherwise only when the stream (stderr by default) is a terminal and ``$CI`` is not set.

When no bar is drawn :func:`bar` returns a :class:`NullBar`, whose methods do nothing, so a
loop calls ``update`` without asking. Bars never touch a random number generator: what a
loop computes is the same with and without them.

This module imports nothing of probgen but its errors, so that every layer can use it.
"""

from __future__ import annotations

import os
import sys

from probgen.errors import ConfigError

__all__ = ["ENV", "NullBar", "bar", "enabled", "write"]

ENV = "PROBGEN_PROGRESS"
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def enabled(progress: bool = True, file=None) -> bool:
    """Whether :func:`bar` draws a bar for this ``progress`` option on ``file`` (default stderr)."""
    if not progress:
        return False
    env = os.environ.get(ENV, "").strip().lower()
    if env in _ON:
        return True
    if env in _OFF:
        return False
    if env:
        raise ConfigError(f"${ENV} must be 1 (always draw progress bars) or 0 (never); got "
                          f"{os.environ[ENV]!r}. Unset it to draw them on a terminal only.")
    if os.environ.get("CI", "").strip().lower() not in ("", *_OFF):
        return False
    stream = sys.stderr if file is None else file
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class NullBar:
    """The bar that is not drawn: tqdm's methods that probgen's loops call, doing nothing."""

    n = 0
    total = None

    def update(self, n: float = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def set_description(self, *args, **kwargs) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullBar:
        return self

    def __exit__(self, *exc) -> None:
        pass


def bar(total: float | None = None, *, desc: str | None = None, unit: str = "it",
        initial: float = 0, progress: bool = True, file=None, unit_scale: bool = False,
        leave: bool = False):
    """A tqdm bar of ``total`` units when :func:`enabled`, else a :class:`NullBar`.

    Parameters
    ----------
    total : number, optional
        Units of the whole job (the time left needs it); ``None`` shows the count and rate.
    desc, unit, initial, unit_scale, leave
        As tqdm's (``initial``: units already done, e.g. by a resumed run).
    progress : bool
        The caller's option; ``False`` never draws.
    file : stream, optional
        Where to draw (default stderr).
    """
    if not enabled(progress, file):
        return NullBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=file, leave=leave,
                unit_scale=unit_scale, dynamic_ncols=True)


def write(message: str, *, file=None) -> None:
    """Print a line (to stdout by default) without breaking a bar on the screen."""
    auto = sys.modules.get("tqdm.auto")  # imported once a bar has been drawn
    if auto is None:
        print(message, file=file, flush=True)
        return
    auto.tqdm.write(message, file=file)
    (sys.stdout if file is None else file).flush()
