"""models/ and inference/ install as probgen.models and probgen.inference, never as bare names."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_editable_install_maps_root_folders():
    import probgen.inference
    import probgen.models

    assert Path(probgen.models.__file__).parent == REPO / "models"
    assert Path(probgen.inference.__file__).parent == REPO / "inference"
    code = "import importlib.util as u; print(u.find_spec('models') is None, u.find_spec('inference') is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert out.stdout.split() == ["True", "True"], "a bare `import models` resolves to probgen's folder"


def test_built_wheel_holds_and_imports_subpackages(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(REPO)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{proc.stderr[-2000:]}")
    # the license is an SPDX expression, not the table setuptools deprecates
    assert "SetuptoolsDeprecationWarning" not in proc.stdout + proc.stderr
    wheel = next((tmp_path / "dist").glob("probgen-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: MIT" in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
    for required in ("probgen/models/__init__.py", "probgen/inference/__init__.py",
                     "probgen/data/__init__.py", "probgen/eval/__init__.py", "probgen/cli.py"):
        assert required in names
    assert not any(n.startswith(("models/", "inference/")) for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import probgen.models, probgen.inference, probgen.data, probgen.eval; "
            "print(probgen.models.__file__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, check=True)
    assert out.stdout.strip().startswith(str(site))
