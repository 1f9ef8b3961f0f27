"""Every example runs offline with --smoke, in a subprocess, as a user would run it.

A new script in examples/ must be added to EXAMPLES: the last test fails otherwise.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"

# script name -> extra arguments (besides --smoke and --out)
EXAMPLES: dict[str, list[str]] = {
    "gan_toy.py": [],
    "dcgan_mnist.py": [],
    "gan_latent.py": [],
    "gan_inversion.py": [],
    "vae_mnist.py": [],
    "autoencoders.py": [],
    "decoder_from_codes.py": [],
    "ppca_bounds.py": [],
    "kl_demo.py": [],
    "density_estimation.py": [],
    "kmeans_digits.py": [],
    "ais_ppca.py": [],
    "ais_vae.py": [],
    "mixture_model_choice.py": [],
    "vampprior_vae.py": [],
    "mixture_of_vaes.py": [],
    "pyro_vae.py": [],
}


# the longest smoke runs (35-46 s each on a 2-core machine): with `-m slow` (`make test-all`),
# so that the default suite stays within its ten minutes
SLOW_EXAMPLES = {"mixture_of_vaes.py", "vampprior_vae.py", "ais_vae.py"}


@pytest.mark.parametrize("script", [pytest.param(s, marks=pytest.mark.slow) if s in SLOW_EXAMPLES else s
                                    for s in sorted(EXAMPLES)])
def test_example_runs(script, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    cmd = [sys.executable, str(EXAMPLES_DIR / script), "--smoke", "--out", str(tmp_path), *EXAMPLES[script]]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def test_every_example_is_listed():
    scripts = {p.name for p in EXAMPLES_DIR.glob("*.py") if not p.name.startswith("_")}
    missing = scripts - set(EXAMPLES)
    assert not missing, f"examples not in tests/test_examples.py EXAMPLES: {sorted(missing)}"
