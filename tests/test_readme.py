"""The README's "Models are programs" section runs as written: its Python snippets top to
bottom, and its commands (with smaller data and sample counts)."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _section() -> str:
    text = README.read_text()
    start = text.index("### Models are programs")
    return text[start:text.index("\n## ", start)]


@pytest.mark.slow  # about a minute: run with -m slow
def test_models_are_programs_section_runs(tmp_path, monkeypatch):
    section = _section()
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3
    files = [b for b in blocks if b.startswith("# my_model.py")]
    assert len(files) == 1
    (tmp_path / "my_model.py").write_text(files[0])
    script = "\n".join(b for b in blocks if b not in files)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": "", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
                               "PATH": "/usr/bin:/bin"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = proc.stdout.splitlines()[0].split()
    # the posterior of loc is N(mean(x), 1/500) nearly: m near 3, s well below its start of 1
    assert abs(float(first[0]) - 3.0) < 0.2 and 500 ** -0.5 / 2 < float(first[1]) < 0.3
    elbo, iwae = map(float, proc.stdout.splitlines()[-2].split())
    assert proc.stdout.splitlines()[-1] == "torch.Size([1000])"
    assert elbo <= iwae

    from probgen.cli import main

    smaller = {"train": ["--limit", "2000", "--no-figures"],
               "eval": ["--limit", "100", "--ais-steps", "10"],
               "compare": ["--budget", "0.05", "--limit", "1000", "--eval-limit", "100", "--k", "10"]}
    commands = [line.strip() for line in section.splitlines() if line.startswith("    probgen ")]
    assert [shlex.split(c)[1] for c in commands] == ["train", "eval", "compare"]
    monkeypatch.chdir(tmp_path)
    for c in commands:
        argv = shlex.split(c)[1:]
        assert main(argv + smaller[argv[0]]) == 0, c
    assert "| TinyVAE |" in (tmp_path / "cmp" / "report.md").read_text()
