"""How long ``probgen --help`` takes, against the bare start of the same Python.

The command line imports nothing heavy until a command runs (tests/test_cli.py checks that
building the parser imports no torch); this measures what that buys. Each round runs
``python -c pass`` (the reference: the interpreter's own start) and ``python -m probgen
--help``, interleaved, as fresh processes.

    python benchmarks/cli_help.py [--rounds 15]

The last line is ``RESULT ratio=<probgen --help / python -c pass> help_s=... python_s=...``;
``help_s`` is the figure to read against a person's wait (well under a second is the aim).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def _time(argv: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    return elapsed


def main(args) -> None:
    ref, ours = [], []
    for _ in range(args.rounds):
        ref.append(_time([sys.executable, "-c", "pass"]))
        ours.append(_time([sys.executable, "-m", "probgen", "--help"]))
    r, o = statistics.median(ref), statistics.median(ours)
    print(f"python -c pass      median {r:.3f} s over {args.rounds} rounds")
    print(f"probgen --help      median {o:.3f} s")
    print(f"RESULT ratio={o / r:.2f} help_s={o:.3f} python_s={r:.3f} rounds={args.rounds}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    main(p.parse_args())
