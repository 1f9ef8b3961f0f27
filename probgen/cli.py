"""The ``probgen`` command.

    probgen datasets
    probgen train MODEL --data NAME --out RUN_DIR [--seed S] [--device cpu|cuda|auto] [--resume]
    probgen train program --model path/to/file.py:Name --data NAME --out RUN_DIR
    probgen eval RUN_DIR [--k 5000] [--seed S] [--out FILE] [--overwrite]
    probgen sample RUN_DIR -n N
    probgen kl-demo --out DIR

The commands are a parser over :mod:`probgen.training` (``train``, ``evaluate``) and
:mod:`probgen.comparison` (``compare``), which Python callers use directly.
Nothing heavy is imported until a command runs, so ``probgen --help`` answers at once.
Errors reach the user as one message and a non-zero exit; ``--debug`` shows the traceback.
Long jobs draw progress bars on a terminal (not in logs or CI); ``--quiet`` turns them off.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from probgen import __version__
from probgen.checks import check_positive_int, positive_float, positive_int
from probgen.errors import ConfigError, ProbgenError, suggest
from probgen.recipes import RECIPES, add_recipe_arguments, fill_budget, get_recipe

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse, with the nearest valid flag suggested for an unknown one (and no silent
    abbreviations: ``--res`` is an error, not ``--resume``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):  # noqa: D401 - argparse API
        if message.startswith("unrecognized arguments:"):
            bad = message.split(":", 1)[1].split()
            flags = [s for a in self._actions for s in a.option_strings]
            hints = "".join(suggest(b.split("=")[0], flags) for b in bad if b.startswith("-"))
            message = f"{message}.{hints} See `{self.prog} --help`."
        super().error(message)


def _add_common_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", metavar="DIR", default=None,
                   help="folder with the image files (default: $PROBGEN_DATA_ROOT)")
    p.add_argument("--download", action="store_true",
                   help="let torchvision download a missing image data set (needs a network; "
                        "default off)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors (default off)")


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (they are drawn on a terminal only, never in logs or CI; "
                        "default: drawn on a terminal)")


def _add_estimator_args(p: argparse.ArgumentParser, command: str) -> None:
    """The estimators' flags, generated from their table (:mod:`probgen.eval.registry`)."""
    from probgen.eval import registry

    registry.add_arguments(p, command)


# options whose values may start with "-" (argparse reads "-1,1" as an option otherwise)
_NEGATIVE_VALUED = ("--value-range",)


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--value-range -1,1`` as ``--value-range=-1,1``, which argparse reads as a value."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if a in _NEGATIVE_VALUED and nxt[:1] == "-" and nxt[1:2].isdigit():
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="probgen",
        description="Write generative models as programs, fit them, and compare explicit "
        "and implicit density estimators on the same data.",
    )
    parser.add_argument("--version", action="version", version=f"probgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("datasets", help="list the named data sets")
    p.set_defaults(_parser=p)
    p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    p = sub.add_parser("train", help="train a model into a run folder")
    models = p.add_subparsers(dest="model", metavar="MODEL", parser_class=_Parser)
    for name, recipe in RECIPES.items():
        mp = models.add_parser(name, help=recipe.help, description=recipe.help)
        mp.set_defaults(_parser=mp)
        mp.add_argument("--data", required=True, metavar="NAME|PATH",
                        help="a data set name (see `probgen datasets`) or a path to your data")
        mp.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to write")
        mp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        mp.add_argument("--resume", action="store_true", help="continue the run in --out")
        mp.add_argument("--overwrite", action="store_true", help="replace the run in --out")
        mp.add_argument("--binarize", choices=["none", "fixed", "dynamic"], default=None,
                        help="binarise image pixels: never, once, or afresh every batch")
        mp.add_argument("--value-range", choices=["0,1", "-1,1"], default=None, metavar="RANGE",
                        help="pixel range of image data: 0,1 or -1,1")
        mp.add_argument("--dequantize", choices=["none", "auto", "on"], default=None,
                        help="model (k + u) / 256 for 8-bit values k, u ~ U[0,1): auto = images "
                             "(the default of continuous models); scored as a bound on log P(k)")
        mp.add_argument("--bin-width", type=float, default=None, metavar="W",
                        help="spacing of the values of data that are not 8-bit, to dequantize them")
        mp.add_argument("--limit", type=int, default=None, metavar="N",
                        help="use at most N training examples")
        mp.add_argument("--no-figures", action="store_true", help="skip the figures")
        mp.add_argument("--time-budget", type=positive_float, default=None, metavar="SECONDS",
                        help="stop training (with a checkpoint) once this much time has passed")
        mp.add_argument("--deterministic", action="store_true",
                        help="deterministic kernels only (torch.use_deterministic_algorithms; on "
                             "CUDA slower, and an error where an operation has none)")
        mp.add_argument("--allow-changed-data", action="store_true",
                        help="--resume even when the data differ from those the run trained on "
                             "(recorded in the run)")
        if recipe.distributed:
            mp.add_argument("--nproc", type=int, default=None, metavar="N",
                            help="train in N processes on this machine (launches torchrun; "
                                 "--batch-size is per process)")
            mp.add_argument("--max-restarts", type=int, default=0, metavar="R",
                            help="when a process dies, start the group again from the last "
                                 "checkpoint, at most R times (torchrun's elastic agent)")
            mp.add_argument("--dist-timeout", type=positive_float, default=None, metavar="SECONDS",
                            help="how long a process waits for the others before it fails "
                                 "(default: torch's, 30 min for gloo)")
        _add_quiet(mp)
        _add_common_data_args(mp)
        add_recipe_arguments(mp, recipe)

    p = sub.add_parser("eval", help="evaluate a trained run; writes RUN_DIR/eval.json")
    p.set_defaults(_parser=p)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--n-samples", type=positive_int, default=None,
                   help="samples drawn for the sample metrics (default: size of the split, at most 10,000)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="evaluate on the first N examples of the split")
    _add_estimator_args(p, "eval")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed of the Monte Carlo estimates and samples (default 0)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="where to write the results (default RUN_DIR/eval.json; elsewhere, the run "
                        "folder is only read, even while it trains)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results file if it exists (otherwise it is an error)")
    _add_quiet(p)
    p.add_argument("--allow-changed-data", action="store_true",
                   help="evaluate even when the data differ from those the run trained on")
    p.add_argument("--allow-changed-model", action="store_true",
                   help="score a program run whose file has changed since it was trained")
    _add_common_data_args(p)

    p = sub.add_parser("sample", help="draw samples from a trained run")
    p.set_defaults(_parser=p)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="where to save them: .pt (a torch tensor), .npy or .npz (numpy; key "
                   "'samples'), with a figure beside it, FILE's name with .png (default "
                   "RUN_DIR/samples.pt and RUN_DIR/samples.png)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-changed-model", action="store_true",
                   help="sample a program run whose file has changed since it was trained")
    _add_common_data_args(p)

    p = sub.add_parser("compare", help="train and score several models on the same data; writes a report")
    p.set_defaults(_parser=p)
    p.add_argument("--data", required=True, metavar="NAME|PATH",
                   help="a data set name (see `probgen datasets`) or a path to your data (required)")
    p.add_argument("--models", required=True, metavar="MODEL[(OPT=V,...)],...",
                   help="comma-separated rows (required): built-in models ("
                        + ", ".join(m for m in RECIPES if m != "program")
                        + ") and your own programs as path/to/file.py:Name; each may carry its "
                        "options, named as its `probgen train MODEL` flags with _ for -, e.g. "
                        "\"vae(likelihood=gaussian,latent_dim=2),gan,my.py:MyVAE(lr=3e-4)\" "
                        "(a list value in brackets: hidden=[512,256]). Options left out take "
                        "the defaults of the data; weight=W gives a row W times the budget share "
                        "of a row of weight 1 (default 1), e.g. gan(weight=2)")
    p.add_argument("--budget", type=positive_float, default=5.0, metavar="MINUTES",
                   help="training time for all models together, split by the rows' weights "
                        "(equal by default); time a quick model leaves goes to the others; "
                        "scoring is not counted (default 5)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the report and runs (required)")
    p.add_argument("--runs", default=None, metavar="MODEL=DIR,...",
                   help="score these finished runs instead of training, e.g. "
                        "vae=runs/vae,gan=runs/gan (default: train every model)")
    p.add_argument("--seed", type=int, default=0, help="seed of training and scoring (default 0)")
    p.add_argument("--no-model-choice", dest="model_choice", action="store_false",
                   help="skip choosing the number of mixture components (BIC, PSIS-LOO) that "
                        "runs beside a gmm row on 1-D and 2-D data (default: run it, within "
                        "its share of the budget)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="train on at most N examples (default: all)")
    p.add_argument("--eval-limit", type=positive_int, default=None, metavar="N",
                   help="evaluate on the first N test examples (default: all)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a comparison in --out (default: refuse)")
    p.add_argument("--allow-changed-model", action="store_true",
                   help="score a --runs program run whose file has changed since (default: refuse)")
    p.add_argument("--allow-changed-data", action="store_true",
                   help="score --runs even when their data differ from those they trained on "
                        "(default: refuse)")
    p.add_argument("--dequantize", choices=["none", "auto", "on"], default=None,
                   help="as for `probgen train`, for every row that models values (a row that "
                        "binarises its pixels keeps them binary): none models the values as "
                        "they are, on/auto score a bound on log P of the discrete values "
                        "(default: each model's own, auto for continuous models)")
    p.add_argument("--bin-width", type=positive_float, default=None, metavar="W",
                   help="spacing of the data's values where they are discrete but not 8-bit "
                        "(counts: 1), to score log P of those values by dequantization; as "
                        "--dequantize, for every row that models values (default: none)")
    _add_estimator_args(p, "compare")
    _add_quiet(p)
    _add_common_data_args(p)

    p = sub.add_parser("demo", help="the quick tour: a small comparison on bundled offline data")
    p.set_defaults(_parser=p)
    p.add_argument("--out", default="demo-output", metavar="DIR")
    p.add_argument("--budget", type=positive_float, default=3.0, metavar="MINUTES",
                   help="training time of each comparison, whose parts run side by side in two "
                   "processes: the image part takes 0.9 of it, the toy part 0.6 (default 3)")
    p.add_argument("--smoke", action="store_true", help="tiny settings (seconds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    _add_quiet(p)
    p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    p = sub.add_parser("kl-demo", help="forward vs reverse KL: mode covering and mode seeking")
    p.set_defaults(_parser=p)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny settings (seconds)")
    p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    if len(argv) >= 2 and argv[0] == "train" and not argv[1].startswith("-") and argv[1] not in RECIPES:
        print(f"probgen: error: unknown model {argv[1]!r}.{suggest(argv[1], RECIPES)} "
              f"Known models: {', '.join(RECIPES)}.", file=sys.stderr)
        return 2
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "train" and args.model is None:
        parser.parse_args(["train", "--help"])
    args._argv = argv
    handler = _COMMANDS[args.command]
    from probgen.runs import locks_released_after

    try:
        with locks_released_after():  # the run folders a command writes are free once it ends
            return handler(args) or 0
    except ProbgenError as e:
        if getattr(args, "debug", False):
            raise
        print(f"probgen: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("probgen: interrupted", file=sys.stderr)
        return 130


# ----------------------------------------------------------------------------- commands
def _cmd_datasets(args) -> int:
    from probgen.data import list_datasets

    rows = [(i.name, "x".join(map(str, i.shape)), i.size, i.source) for i in list_datasets()]
    head = ("name", "shape", "size (train + val + test)", "source")
    widths = [max(len(str(r[c])) for r in rows + [head]) for c in range(4)]
    for r in [head] + rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    print("\nOr give --data PATH: a .npy/.npz/.pt array file or an ImageFolder-style folder.")
    return 0


def load_run_data(config: dict, *, device="cpu", data_root=None, download=False):
    """The data set a run was trained on (:func:`probgen.training.load_run_data`)."""
    from probgen.training import load_run_data as load

    return load(config, device=device, data_root=data_root, download=download)


def _train_argv_without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _cmd_train(args) -> int:
    import os

    recipe = get_recipe(args.model)
    nproc = getattr(args, "nproc", None)
    restarts = getattr(args, "max_restarts", 0)
    under_torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not under_torchrun and "TORCHELASTIC_RUN_ID" not in os.environ:
        from probgen.runs import check_unlocked

        check_unlocked(args.out)  # another writer: say so now, before any process starts
    if under_torchrun and not RECIPES[args.model].distributed:
        supported = [m for m, r in RECIPES.items() if r.distributed]
        raise ConfigError(f"`probgen train {args.model}` trains in one process only; under "
                          f"torchrun use one of: {', '.join(supported)}.")
    if (nproc is not None or restarts) and not under_torchrun and "TORCHELASTIC_RUN_ID" not in os.environ:
        nproc = check_positive_int("--nproc", 1 if nproc is None else nproc)
        if restarts < 0:
            raise ConfigError(f"--max-restarts must be 0 or more; got {restarts}.")
        if nproc > 1 or restarts:
            from probgen import distributed as pdist

            return pdist.launch(_train_argv_without_nproc(args._argv), nproc, max_restarts=restarts)
    if not under_torchrun:
        return _train(args, recipe)
    from probgen import distributed as pdist
    from probgen.runs import resolve_device

    device = resolve_device(args.device)
    if device.type == "cuda":  # one GPU per process
        device = resolve_device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    pdist.setup(device, timeout=args.dist_timeout)
    try:
        return _train(args, recipe, device=device)
    finally:
        pdist.cleanup()


def deterministic_algorithms(enabled: bool = True):
    """Deterministic kernels only, inside the block (:func:`probgen.training.deterministic_algorithms`)."""
    from probgen.training import deterministic_algorithms as block

    return block(enabled)


# the flags of `probgen train` that are not options of the model's recipe
_TRAIN_FLAGS = {"command", "model", "data", "out", "debug", "_parser", "_argv", "nproc", "seed",
                "device", "resume", "overwrite", "binarize", "value_range", "limit", "no_figures",
                "time_budget", "deterministic", "data_root", "download", "allow_changed_model",
                "quiet", "dequantize", "bin_width", "max_restarts", "dist_timeout",
                "allow_changed_data"}


def _train(args, recipe, device=None) -> int:
    from probgen.training import train_with_options

    a = vars(args)
    common = {k: a[k] for k in ("seed", "device", "resume", "overwrite", "binarize", "value_range",
                                "dequantize", "bin_width", "limit", "time_budget", "deterministic",
                                "data_root", "download", "allow_changed_data")}
    common["argv"] = list(args._argv)
    common["figures"] = not args.no_figures
    common["progress"] = not args.quiet
    common["allow_changed_model"] = a.get("allow_changed_model", False)
    options = {k: v for k, v in a.items() if k not in _TRAIN_FLAGS}
    fill_budget_unless_given(args.model, options, common["time_budget"], args._argv)
    result = train_with_options(args.model, args.data, args.out, common, options, device=device)
    if result.stopped_by:
        return 128 + 15 if result.stopped_by == "SIGTERM" else 130
    return 0


def fill_budget_unless_given(model: str, options: dict, time_budget, argv) -> None:
    """With ``--time-budget`` and no length on the command line (``--epochs``, ``--steps``,
    or a preset's), a recipe whose schedule does not need the length trains until the budget
    stops it, as in ``compare`` (:func:`probgen.recipes.fill_budget`), instead of stopping at
    the default length long before (a VAE's 20 epochs are about a minute of 30 minutes)."""
    recipe = RECIPES.get(model)
    length = getattr(recipe, "trains_by", None)
    if not time_budget or length not in options or options.get("preset"):
        return
    flags = (recipe.Config.flags()[length], *recipe.Config.options()[length].aliases)
    if not any(t == f or t.startswith(f + "=") for t in argv for f in flags):
        fill_budget(model, options)


def _load_run(args):
    from probgen.training import load_run

    return load_run(args.run_dir, device=args.device, data_root=args.data_root,
                    download=getattr(args, "download", False),
                    allow_changed_model=getattr(args, "allow_changed_model", False))


def _what_it_is(m: dict) -> str:
    """What a likelihood printed by ``probgen eval`` is: its estimator, the representation of
    the data it is a likelihood of, and bits per dimension where those mean something
    ("  [iwae-5000 on binary data; 0.1631 ± 0.00041 bits/dim]"); empty for other metrics."""
    estimator, rep = m.get("estimator"), m.get("representation")
    if not estimator or not rep:
        return ""
    if m.get("inner_estimator"):
        estimator = f"{estimator} ({m['inner_estimator']} inside)"
    bpd = m.get("bits_per_dim")
    if bpd is not None:
        se = m.get("bits_per_dim_stderr")
        bpd = f"; {bpd:.4g}{f' ± {se:.2g}' if se is not None else ''} bits/dim"
    return f"  [{estimator} on {rep} data{bpd or ''}]"


def _cmd_eval(args) -> int:
    from probgen.runs import check_unlocked

    if not args.out:
        check_unlocked(args.run_dir)  # another writer: say so before the slow imports
    from probgen.training import check_eval_out, evaluate

    path = Path(args.out) if args.out else Path(args.run_dir) / "eval.json"
    check_eval_out(path, args.overwrite, explicit=args.out is not None)
    from probgen.eval.registry import options_from_args

    result = evaluate(
        args.run_dir, split=args.split, n_samples=args.n_samples, limit=args.limit,
        device=args.device, data_root=args.data_root, allow_changed_model=args.allow_changed_model,
        seed=args.seed, allow_changed_data=args.allow_changed_data, progress=not args.quiet,
        write=True, out=args.out, announce=True, **options_from_args(args),
    )
    for name, m in result["metrics"].items():
        if m.get("value") is None:
            print(f"  {name:24s} -- ({m.get('reason', '')})")
        else:
            se = m.get("stderr")
            se = f" ± {se:.4g}" if se is not None else ""
            given = (m.get("extra") or {}).get("given")
            given = f"  (given {given})" if given else ""
            print(f"  {name:24s} {m['value']:.6g}{se} {m.get('unit', '')}{_what_it_is(m)}"
                  f"{given}".rstrip())
    print(f"wrote {path}")
    return 0


def _cmd_sample(args) -> int:
    import torch

    from probgen.runs import seed_everything

    check_positive_int("-n", args.n)
    out = Path(args.out) if args.out else Path(args.run_dir) / "samples.pt"
    if out.suffix not in SAMPLE_FORMATS:
        raise ConfigError(f"--out {out}: samples are written as {', '.join(SAMPLE_FORMATS)} "
                          f"(by the file's suffix); got {out.suffix or 'no suffix'!r}. Name the "
                          "file e.g. samples.npy.")
    run, data, model = _load_run(args)
    seed_everything(args.seed)
    with torch.no_grad():
        x = model.sample(args.n).detach().cpu()
    # a model of dequantized data samples values plus their noise: each sample is written as
    # the discrete value of its bin, as the data hold them
    x = data.as_values(x)
    import io

    import numpy as np

    from probgen.runs import atomic_write_bytes
    buf = io.BytesIO()
    if out.suffix == ".npy":
        np.save(buf, x.numpy())
    elif out.suffix == ".npz":
        np.savez(buf, samples=x.numpy())
    else:
        torch.save(x, buf)
    atomic_write_bytes(out, buf.getvalue())
    from probgen import plots

    # beside the samples, not over the figures training wrote (RUN_DIR/figures/samples.png)
    fig = plots.samples_figure(x, data, out.with_suffix(".png"))
    values = (f" (the {data.representation} data's own values: each sample at the lower edge of "
              "its bin)") if data.bin_width is not None else ""
    print(f"wrote {args.n} samples to {out}{values} and a figure to {fig}")
    return 0


# what ``probgen sample --out`` writes, by the file's suffix
SAMPLE_FORMATS = (".pt", ".npy", ".npz")


def _cmd_kl_demo(args) -> int:
    from probgen.kl_demo import run_kl_demo

    result = run_kl_demo(args.out, seed=args.seed, smoke=args.smoke)
    for problem, fits in result["problems"].items():
        for which in ("forward", "reverse"):
            f = fits[which]
            print(f"  {problem:10s} {which:8s} KL(p||q)={f['kl_p_q']:.4f} ± {f['kl_p_q_stderr']:.4f}"
                  f"  KL(q||p)={f['kl_q_p']:.4f} ± {f['kl_q_p_stderr']:.4f}")
    print(f"wrote {Path(args.out) / 'kl.json'} and figures in {args.out}")
    return 0


def _cmd_compare(args) -> int:
    from probgen.comparison import CompareSpec, compare
    from probgen.eval.registry import options_from_args

    runs = {}
    if args.runs:
        for item in args.runs.split(","):
            if "=" not in item:
                raise ConfigError(f"--runs takes MODEL=DIR pairs separated by commas; got {item!r}.")
            name, d = item.split("=", 1)
            runs[name.strip()] = Path(d.strip())
    spec = CompareSpec(
        data=args.data, models=args.models,
        out=Path(args.out), budget_minutes=args.budget, runs=runs, seed=args.seed,
        device=args.device, data_root=args.data_root, model_choice=args.model_choice,
        limit=args.limit, dequantize=args.dequantize, bin_width=args.bin_width,
        eval_limit=args.eval_limit, overwrite=args.overwrite, quiet=args.quiet,
        allow_changed_model=args.allow_changed_model, allow_changed_data=args.allow_changed_data,
        **options_from_args(args),
    )
    compare(spec)
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


def _cmd_demo(args) -> int:
    from probgen.demo import run_demo

    run_demo(Path(args.out), budget_minutes=args.budget, smoke=args.smoke, seed=args.seed,
             device=args.device, quiet=args.quiet)
    return 0


_COMMANDS = {
    "compare": _cmd_compare,
    "demo": _cmd_demo,
    "datasets": _cmd_datasets,
    "train": _cmd_train,
    "eval": _cmd_eval,
    "sample": _cmd_sample,
    "kl-demo": _cmd_kl_demo,
}
