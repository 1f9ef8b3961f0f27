"""benchmarks/gpu_check.sh, as far as a machine without CUDA can check it: it parses, lints
clean, and refuses at once, saying why, before installing or running anything."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def _run(tmp_path, *args, **env):
    full = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_VENV": str(tmp_path / "venv"),
            "GPU_CHECK_OUT": str(tmp_path / "out"), **env}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full,
                          timeout=120)


def test_the_script_parses_and_lints_clean():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    proc = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_without_cuda_it_prints_the_header_and_refuses_before_any_work(tmp_path):
    proc = _run(tmp_path)
    assert proc.returncode == 2
    assert f"torch {torch.__version__}" in proc.stdout and "cuda available: False" in proc.stdout
    assert "gpu_check: error: no CUDA device" in proc.stderr
    assert "RESULT" not in proc.stdout
    assert not (tmp_path / "venv").exists() and not (tmp_path / "out").exists()


def test_bad_arguments_and_settings_are_refused(tmp_path):
    proc = _run(tmp_path, "--bogus")
    assert proc.returncode == 2 and "unknown argument '--bogus'" in proc.stderr
    proc = _run(tmp_path, GPU_CHECK_DRY_RUN="gpu")
    assert proc.returncode == 2 and "GPU_CHECK_DRY_RUN must be cpu or unset" in proc.stderr
