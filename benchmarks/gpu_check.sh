#!/usr/bin/env bash
# The prepared CUDA check: everything probgen has to show on a GPU, in one run of at most
# 8 minutes, each part ending in a `RESULT` line.
#
#   1. the tests that need CUDA      pytest -m cuda tests/test_cuda.py
#   2. the VAE step benchmark        benchmarks/vae_step.py --device cuda, without and with --amp
#   3. the GAN step benchmark        benchmarks/gan_step.py --device cuda, without and with --amp
#   4. the VAE epoch                 `probgen train vae --data mnist --epochs 1` on CUDA
#                                    (and benchmarks/vae_epoch.py where it takes --device)
#   5. IWAE-5000 on the full MNIST test set (10,000 images) from a VAE trained briefly on CUDA
#
# Usage, from the repository root:
#
#   bash benchmarks/gpu_check.sh                   # the check (needs a CUDA device)
#   bash benchmarks/gpu_check.sh --download-wheels # on a machine with PyPI: fill $WHEELS
#
# The GPU machine is expected to have Python with torch (CUDA build), torchvision and
# matplotlib, and no network. What probgen needs beyond that is installed from wheels carried
# along in $WHEELS (default .cache/wheels), never from an index, into a virtual environment
# that sees the machine's own packages (--system-site-packages): its torch is used as it is,
# never replaced (a constraint pins it, and the check stops if its version changed).
#
# Preparing the carried folders (on this side, with PyPI; the GPU machine's Python is 3.12 on
# x86-64 unless PY_VERSION says otherwise):
#
#   bash benchmarks/gpu_check.sh --download-wheels
#       pip download --only-binary=:all: --no-deps --python-version 3.12 of pyro-ppl, pyro-api,
#       opt_einsum, tqdm, arviz and its light dependencies (xarray, xarray-einstats,
#       h5netcdf, platformdirs, packaging, typing_extensions), pytest and its dependencies,
#       setuptools>=77 and wheel: about 6 MB. WHEELS_HEAVY=1 adds scipy, pandas, h5py,
#       scikit-learn, mlxtend and their dependencies (about 62 MB more), for a machine that
#       lacks them; the check itself does not need them.
#   mkdir -p .cache/mnist && cp /work/shared/data/mnist/*-ubyte.gz .cache/mnist/
#       the four MNIST files (11 MB), for parts 1, 4 and 5.
#
# then run it there with both folders, e.g. (the device tool of this project)
#   run(command="bash benchmarks/gpu_check.sh", carry=[".cache/wheels", ".cache/mnist"])
#
# Environment: PYTHON (default python3), WHEELS (default .cache/wheels), PROBGEN_DATA_ROOT
# (default .cache/mnist, else shared/data/mnist), GPU_CHECK_BUDGET (seconds, default 480),
# GPU_CHECK_VENV (default .cache/gpu-venv). GPU_CHECK_DRY_RUN=cpu runs every part on the CPU
# with tiny sizes: a check of this script (install, parts, RESULT lines), not of CUDA.
# Exit status: 0 when every part passed, 1 when one failed or ran out of time, 2 without a
# CUDA device or without a dependency.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.cache/wheels}
BUDGET=${GPU_CHECK_BUDGET:-480}
VENV=${GPU_CHECK_VENV:-.cache/gpu-venv}
PY_VERSION=${PY_VERSION:-3.12}
OUT=${GPU_CHECK_OUT:-.cache/gpu-check}
DRY=${GPU_CHECK_DRY_RUN:-}
case "$DRY" in
  "") DEV=cuda ;;
  cpu) DEV=cpu ;;
  *) echo "gpu_check: error: GPU_CHECK_DRY_RUN must be cpu or unset; got '$DRY'" >&2; exit 2 ;;
esac

say() { echo "gpu_check: $*"; }
die() { echo "gpu_check: error: $*" >&2; exit 2; }

# ----------------------------------------------------------------------------- wheels
CORE_WHEELS="pyro-ppl pyro-api opt_einsum tqdm pytest iniconfig pluggy pygments packaging setuptools>=77 wheel"
LIGHT_WHEELS="arviz xarray xarray-einstats h5netcdf platformdirs typing_extensions"
HEAVY_WHEELS="scipy pandas python-dateutil six h5py scikit-learn joblib threadpoolctl narwhals mlxtend"

if [ "${1:-}" = "--download-wheels" ]; then
  mkdir -p "$WHEELS" || die "cannot create $WHEELS"
  list="$CORE_WHEELS $LIGHT_WHEELS"
  [ "${WHEELS_HEAVY:-0}" = 1 ] && list="$list $HEAVY_WHEELS"
  # --no-deps: the dependencies are named one by one, so that torch and its CUDA libraries
  # (gigabytes, and the GPU machine's own) are never downloaded
  # shellcheck disable=SC2086  # the lists split into package names on purpose
  "$PYTHON" -m pip download --dest "$WHEELS" --only-binary=:all: --no-deps \
    --python-version "$PY_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any $list || die "pip download failed"
  say "wheels in $WHEELS: $(du -sh "$WHEELS" | cut -f1)"
  exit 0
elif [ -n "${1:-}" ]; then
  die "unknown argument '$1'; run without arguments, or with --download-wheels"
fi

# ----------------------------------------------------------------------------- header
command -v "$PYTHON" >/dev/null 2>&1 || die "no $PYTHON on this machine; set PYTHON=..."
say "date $(date -u '+%Y-%m-%d %H:%M:%S UTC'), host $(hostname 2>/dev/null || echo '?')"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | sed 's/^/gpu_check: nvidia-smi: /'
DRY="$DRY" "$PYTHON" - <<'EOF' || exit 2
import os, platform, sys
try:
    import torch
except ImportError:
    sys.exit("gpu_check: error: this Python has no torch; the check uses the machine's own CUDA build of torch.")
print(f"gpu_check: python {platform.python_version()}, torch {torch.__version__} "
      f"(CUDA {torch.version.cuda}), cuda available: {torch.cuda.is_available()}")
if os.environ.get("DRY") == "cpu":
    print("gpu_check: DRY RUN on the CPU with tiny sizes: this checks the script, not CUDA")
    sys.exit(0)
if not torch.cuda.is_available():
    sys.exit("gpu_check: error: no CUDA device (torch.cuda.is_available() is False"
             + ("; this torch is a CPU-only build" if torch.version.cuda is None else "")
             + "). This check runs on a machine with an NVIDIA GPU; on the CPU run "
             "`make test` and the benchmarks without --device cuda.")
p = torch.cuda.get_device_properties(0)
print(f"gpu_check: device 0 {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability "
      f"{p.major}.{p.minor}, {torch.cuda.device_count()} device(s); bf16 supported: "
      f"{torch.cuda.is_bf16_supported()}")
EOF
TORCH_VERSION=$("$PYTHON" -c 'import torch; print(torch.__version__)')

# ----------------------------------------------------------------------------- install
START=$SECONDS
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv --system-site-packages "$VENV" || die "cannot create the virtual environment $VENV (python3-venv missing?)"
fi
PY="$VENV/bin/python"
constraints="$VENV/constraints.txt"
"$PY" - > "$constraints" <<'EOF'
import importlib.metadata as md
for name in ("torch", "torchvision", "numpy", "matplotlib"):
    try:
        print(f"{name}=={md.version(name)}")  # keep the machine's own
    except md.PackageNotFoundError:
        pass
EOF
pip_offline() { "$PY" -m pip install --quiet --disable-pip-version-check --no-index --find-links "$WHEELS" -c "$constraints" "$@"; }
if ! "$PY" -c 'import pyro, pytest, tqdm' >/dev/null 2>&1; then
  [ -d "$WHEELS" ] || die "pyro-ppl or pytest is missing and there is no wheel folder $WHEELS; prepare it with 'bash benchmarks/gpu_check.sh --download-wheels' where PyPI is reachable, and carry it along"
  say "installing pyro-ppl, pytest and tqdm from $WHEELS"
  pip_offline pyro-ppl pytest tqdm || die "installing from $WHEELS failed (see pip's message); download the wheels again for Python $PY_VERSION"
fi
if ! "$PY" -c 'import arviz' >/dev/null 2>&1; then  # used by AIS diagnostics and model choice, not by this check
  if pip_offline arviz >/dev/null 2>&1; then
    say "installed arviz from $WHEELS"
  else
    say "arviz not installed (its wheels or scipy/pandas are missing; WHEELS_HEAVY=1 downloads them); this check does not need it"
  fi
fi
if ! "$PY" -c 'import probgen.inference.bounds' >/dev/null 2>&1 || [ "$("$PY" -c 'import probgen, pathlib; print(pathlib.Path(probgen.__file__).resolve().parents[1])')" != "$(pwd -P)" ]; then
  say "installing probgen (editable, without dependencies)"
  pip_offline --no-deps -e . || die "installing probgen failed; $WHEELS needs setuptools>=77 and wheel for the build"
fi
now_torch=$("$PY" -c 'import torch; print(torch.__version__)')
[ "$now_torch" = "$TORCH_VERSION" ] || die "torch changed from $TORCH_VERSION to $now_torch during the install"
say "environment ready in $((SECONDS - START)) s (torch $now_torch untouched)"

if [ -z "${PROBGEN_DATA_ROOT:-}" ]; then
  for d in .cache/mnist shared/data/mnist ../shared/data/mnist; do
    if ls "$d"/t10k-images* >/dev/null 2>&1; then PROBGEN_DATA_ROOT=$(cd "$d" && pwd -P); break; fi
  done
fi
export PROBGEN_DATA_ROOT=${PROBGEN_DATA_ROOT:-}
if [ -n "$PROBGEN_DATA_ROOT" ]; then say "MNIST from $PROBGEN_DATA_ROOT"
else say "no MNIST files found (.cache/mnist); the parts that need them are skipped"; fi
export MPLBACKEND=Agg PYTHONUNBUFFERED=1
mkdir -p "$OUT"
rm -rf "${OUT:?}"/runs

# ----------------------------------------------------------------------------- the parts
FAILED=0
# part NAME LIMIT_S COMMAND...: run it within its limit and what is left of the budget
part() {
  local name=$1 limit=$2 left status t0
  shift 2
  left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -lt 10 ]; then
    echo "RESULT part=$name status=skipped reason=budget_spent"
    FAILED=1
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "--- $name (at most $limit s)"
  t0=$SECONDS
  timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | sed -u "s/^RESULT /RESULT part=$name /"
  status=${PIPESTATUS[0]}
  if [ "$status" = 0 ]; then
    echo "RESULT part=$name status=ok seconds=$((SECONDS - t0))"
  else
    [ "$status" = 124 ] && status="timeout"
    echo "RESULT part=$name status=failed exit=$status seconds=$((SECONDS - t0))"
    FAILED=1
    return 1
  fi
}

# sizes: the real ones, or tiny ones for a dry run on the CPU
if [ "$DEV" = cuda ]; then
  VAE_STEPS=(--steps 200); GAN_STEPS=(); SUBSET=(); BRIEF_S=60; EVAL=(--k 5000)
else
  export PROBGEN_CUDA_TESTS_DEVICE=cpu
  VAE_STEPS=(--steps 5); GAN_STEPS=(--rounds 1 --steps 2 --batch-size 16); SUBSET=(--limit 1000)
  BRIEF_S=5; EVAL=(--k 20 --limit 100 --n-samples 100)
fi

part cuda_tests 120 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py -rs
part vae_step 45 "$PY" benchmarks/vae_step.py --device "$DEV" "${VAE_STEPS[@]}"
part vae_step_amp 45 "$PY" benchmarks/vae_step.py --device "$DEV" "${VAE_STEPS[@]}" --amp
part gan_step 40 "$PY" benchmarks/gan_step.py --device "$DEV" "${GAN_STEPS[@]}"
part gan_step_amp 40 "$PY" benchmarks/gan_step.py --device "$DEV" "${GAN_STEPS[@]}" --amp

if [ -n "$PROBGEN_DATA_ROOT" ]; then
  epoch_run="$OUT/runs/vae-epoch"
  if part vae_epoch 60 "$PY" -m probgen train vae --data mnist --epochs 1 --device "$DEV" \
      "${SUBSET[@]}" --out "$epoch_run" --overwrite --no-figures --quiet; then
    "$PY" -c 'import json, sys; s = json.load(open(sys.argv[1]))["seconds"]; print(f"RESULT part=vae_epoch epoch_s={s:.2f}")' "$epoch_run/train.json"
  fi
  if [ -f benchmarks/vae_epoch.py ] && "$PY" benchmarks/vae_epoch.py --help 2>/dev/null | grep -q -- "--device"; then
    part vae_epoch_bench 60 "$PY" benchmarks/vae_epoch.py --device "$DEV" --data-root "$PROBGEN_DATA_ROOT"
  else
    say "benchmarks/vae_epoch.py with --device is not here; the epoch above stands alone"
  fi
  brief="$OUT/runs/vae-brief"
  part vae_brief_training $((BRIEF_S + 20)) "$PY" -m probgen train vae --data mnist --epochs 1000 \
      --time-budget "$BRIEF_S" --device "$DEV" "${SUBSET[@]}" --out "$brief" --overwrite \
      --no-figures --quiet
  if [ -f "$brief/checkpoints/latest.pt" ]; then
    if part iwae5000 150 "$PY" -m probgen eval "$brief" "${EVAL[@]}" --device "$DEV" \
        --out "$OUT/iwae5000.json" --overwrite --quiet; then
      "$PY" - "$brief" "$OUT/iwae5000.json" <<'EOF'
import json, sys
from pathlib import Path
run, ev = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
m = next(v for k, v in ev["metrics"].items() if k.startswith("iwae_"))
logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
epochs = max((r.get("epoch", 0) for r in logs), default=0)
train_s = json.loads((run / "train.json").read_text())["seconds"]
k = next(k for k in ev["metrics"] if k.startswith("iwae_")).split("_")[1]
print(f"RESULT part=iwae5000 k={k} iwae={m['value']:.3f} stderr={m['stderr']:.3f} n={ev['n']} "
      f"elbo={ev['metrics']['elbo']['value']:.3f} train_s={train_s:.0f} epochs={epochs}")
EOF
    fi
  else
    echo "RESULT part=iwae5000 status=skipped reason=no_trained_run"
    FAILED=1
  fi
else
  echo "RESULT part=vae_epoch status=skipped reason=no_mnist"
  echo "RESULT part=iwae5000 status=skipped reason=no_mnist"
  FAILED=1
fi

say "done in $((SECONDS - START)) s after the header"
echo "RESULT part=all status=$([ "$FAILED" = 0 ] && echo ok || echo failed) seconds=$((SECONDS - START))"
exit "$FAILED"
