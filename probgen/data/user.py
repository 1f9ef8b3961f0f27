"""The user's own data, given by path.

Accepted files
--------------
``.npy``
    One array (loaded with ``allow_pickle=False``).
``.npz``
    One array under any key; or examples under ``x`` / ``data`` / ``images`` with optional
    labels under ``y`` / ``labels`` / ``targets``; or ready-made splits ``x_train``
    (+ ``y_train``), ``x_test`` (+ ``y_test``) and optionally ``x_val`` (+ ``y_val``), as in
    Keras' ``mnist.npz``.
``.pt``
    A tensor, or a dict with the same keys as ``.npz``; loaded with
    ``torch.load(weights_only=True)``, so a file that holds anything but tensors and plain
    containers is refused, never executed.
a folder
    Images in torchvision's ``ImageFolder`` layout (``DIR/<class>/<image>``, classes sorted by
    name, labels 0..K-1), or images directly in ``DIR`` (no labels). All images must have the
    same size; they load as grey (1 channel) when every image is grey, else as RGB.

How arrays are read
-------------------
The first axis indexes examples.

* ``uint8`` arrays are pixels in 0..255 and are scaled to [0, 1]; ``value_range`` and
  ``binarize`` apply to them; they are 8-bit, so they can be dequantized. Rank 3
  ``(N, H, W)`` (grey) and rank 4 are images (``kind="image"``); rank 2 ``(N, D)`` are flat
  pixel vectors (``kind="vector"``).
* A rank-4 array is channel-first ``(N, C, H, W)`` when only its second axis can be a
  channel count (1, 3 or 4), channel-last ``(N, H, W, C)`` (moved to channel-first, the
  internal layout) when only its last axis can: a ``(N, 32, 32, 3)`` uint8 array of colour
  images is read as 3 x 32 x 32 images, D = 3072, without any option. When both axes can
  (``(N, 3, 4, 4)``: three 4 x 4 images or 4-channel 3 x 4 images?), the file must say which:
  an ``.npz`` entry ``layout`` holding ``"NCHW"`` or ``"NHWC"``
  (``np.savez(path, x=x, layout="NHWC")``); otherwise it is an error that says so.
* Float arrays of rank 1 ``(N,)`` (read as ``(N, 1)``) or rank 2 ``(N, D)`` are vectors and
  stay as they are (``value_range`` does not apply; ``binarize`` needs values in [0, 1]).
  Float arrays of rank 3 or 4 are images only when every value lies in [0, 1].
* NaN or infinite values, empty arrays, labels that do not match the examples and other
  ranks are errors that name the file.

Splits
------
Without ready-made splits: a fixed 20% test split (the same for every seed), a 10%
validation split drawn with the seed, and the rest, in seeded order, for training (at least
3 examples). With ``x_train``/``x_test`` but no ``x_val``: 10% of the training examples,
drawn with the seed, become the validation split.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from probgen.data.transforms import (
    check_finite,
    check_seed,
    fixed_test_split,
    holdout,
    make_dataset,
    split_sizes,
)
from probgen.errors import DataError, DataNotFoundError

__all__ = ["load_user_data", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_X_KEYS = ("x", "data", "images")
_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA
_LAYOUTS = ("NCHW", "NHWC")
_Y_KEYS = ("y", "labels", "targets")
_HELP = ("Give one array, or examples under x/data/images with labels under y/labels/targets, or "
         "x_train/y_train, x_test/y_test (and optionally x_val/y_val).")


def load_user_data(path, *, seed=0, value_range=None, binarize="none", limit=None, **_ignored):
    """Load the user's data at ``path`` (see the module docstring for what is accepted).

    Parameters
    ----------
    path : str or path
        An ``.npy``, ``.npz`` or ``.pt`` file, or a folder of images.
    seed, value_range, binarize, limit
        As in :func:`probgen.data.load_dataset`; ``root`` and ``download`` do not apply.

    Returns
    -------
    Dataset
        On the CPU.
    """
    seed = check_seed(seed)
    p = Path(path).expanduser()
    if not p.exists():
        raise DataNotFoundError(
            f"no file or folder at {p}. Give a registered data set name (see `probgen datasets`) "
            "or the path to a .npy/.npz/.pt file or a folder of images."
        )
    if p.is_dir():
        arrays = _read_image_folder(p)
    elif p.suffix == ".npy":
        arrays = {"x": _read_npy(p)}
    elif p.suffix == ".npz":
        arrays = _read_npz(p)
    elif p.suffix == ".pt":
        arrays = _read_pt(p)
    else:
        raise DataError(f"cannot read {p}: expected a .npy, .npz or .pt file or a folder of images; "
                        f"got a {p.suffix or 'suffix-less'} file.")
    splits = _to_splits(arrays, p, seed)
    kind, pixels = splits.pop("_kind")
    extra = {"files": [str(p)]}
    if "_classes" in splits:
        extra["classes"] = splits.pop("_classes")
    levels = 256 if pixels and _on_8bit_grid(splits) else None
    return make_dataset(
        str(path), **splits, kind=kind, pixels=pixels, seed=seed, value_range=value_range,
        binarize=binarize, limit=limit, num_classes=_num_classes(splits, extra.get("classes")),
        source=f"user data: {p}", extra=extra, levels=levels,
    )


def _on_8bit_grid(splits: dict) -> bool:
    """Whether every pixel is ``k / 255`` for an integer ``k`` (uint8 files always are; float
    arrays in [0, 1] may be): then the data are 8-bit and can be dequantized."""
    for key in ("train", "val", "test"):
        x = splits.get(key)
        if x is None:
            continue
        k = x.double() * 255.0
        if not bool(((k - k.round()).abs() <= 1e-4).all()):
            return False
    return True


# ----------------------------------------------------------------------------- readers
def _read_npy(p: Path) -> np.ndarray:
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise DataError(f"{p} holds Python objects, not numbers; save a numeric array.") from e
        raise DataError(f"{p} is truncated or not a valid .npy file ({e}).") from e
    except (OSError, EOFError) as e:
        raise DataError(f"{p} is truncated or not a valid .npy file ({e}).") from e


def _read_npz(p: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise DataError(f"{p} holds Python objects, not numbers; save numeric arrays.") from e
        raise DataError(f"{p} is truncated or not a valid .npz file ({e}).") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{p} is truncated or not a valid .npz file ({e}).") from e


def _read_pt(p: Path) -> dict[str, np.ndarray]:
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise DataError(
            f"{p} holds objects other than tensors and plain containers, which are not loaded "
            "(weights_only=True). Save a tensor or a dict of tensors."
        ) from e
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise DataError(f"{p} is truncated or not a valid torch file ({e}).") from e
    if isinstance(obj, torch.Tensor):
        return {"x": obj.numpy()}
    if isinstance(obj, dict):
        bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        if bad or not all(isinstance(k, str) for k in obj):
            raise DataError(f"{p} holds a dict whose entries are not all tensors under string keys "
                            f"({bad[:5] or 'non-string keys'}). {_HELP}")
        return {k: v.detach().numpy() for k, v in obj.items()}
    raise DataError(f"{p} holds a {type(obj).__name__}; expected a tensor or a dict of tensors.")


def _read_image_folder(p: Path) -> dict[str, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    is_img = lambda f: f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS  # noqa: E731
    classes = sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes:
        files = [(f, c) for c, name in enumerate(classes) for f in sorted((p / name).iterdir()) if is_img(f)]
        empty = [name for name in classes if not any(is_img(f) for f in (p / name).iterdir())]
        if empty:
            raise DataError(f"class folder(s) {', '.join(empty)} in {p} hold no images "
                            f"({', '.join(IMAGE_EXTENSIONS)}).")
    else:
        files = [(f, -1) for f in sorted(p.iterdir()) if is_img(f)]
    if not files:
        raise DataError(f"{p} holds no images ({', '.join(IMAGE_EXTENSIONS)}), neither directly nor "
                        "in class folders (DIR/<class>/<image>).")
    images, modes = [], set()
    for f, _ in files:
        try:
            with Image.open(f) as im:
                im.load()
                modes.add("L" if im.mode in ("1", "L", "I;16", "I", "F") else "RGB")
                images.append(im.copy())
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise DataError(f"{f} is not a readable image ({e}).") from e
    mode = "L" if modes == {"L"} else "RGB"
    arrays, sizes = [], {}
    for (f, _), im in zip(files, images):
        a = np.asarray(im.convert(mode), dtype=np.uint8)
        sizes.setdefault(a.shape[:2], f)
        arrays.append(a)
    if len(sizes) > 1:
        listed = "; ".join(f"{h}x{w} (e.g. {f.name})" for (h, w), f in list(sizes.items())[:4])
        raise DataError(f"the images in {p} have different sizes: {listed}. Resize them to one size.")
    x = np.stack(arrays)  # (N, H, W) grey or (N, H, W, 3)
    x = x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)  # -> (N, C, H, W)
    out = {"x": x, "_layout": "NCHW"}
    if classes:
        out["y"] = np.array([c for _, c in files], dtype=np.int64)
        out["_classes"] = classes
    return out


# ----------------------------------------------------------------------------- arrays -> splits
def _pick(arrays: dict, keys: tuple[str, ...]):
    hits = [k for k in keys if k in arrays]
    return (hits[0], arrays[hits[0]]) if hits else (None, None)


def _layout(arrays: dict, p: Path) -> str | None:
    """The ``layout`` entry of a file ("NCHW" or "NHWC"), removed from ``arrays``; or None."""
    if "layout" not in arrays:
        return None
    value = np.asarray(arrays.pop("layout"))
    text = str(value.item()) if value.ndim == 0 and value.dtype.kind in "US" else None
    if isinstance(text, str) and text.upper() in _LAYOUTS:
        return text.upper()
    raise DataError(f"{p} [layout] must be the string 'NCHW' (channel-first) or 'NHWC' "
                    f"(channel-last); got {value.tolist()!r}.")


def _to_splits(arrays: dict, p: Path, seed: int) -> dict:
    classes = arrays.pop("_classes", None)
    # an image folder's arrays are channel-first; a file may say its layout
    layout = arrays.pop("_layout") if isinstance(arrays.get("_layout"), str) else _layout(arrays, p)
    if not arrays:
        raise DataError(f"{p} holds no arrays. {_HELP}")
    if "x_train" in arrays:
        if "x_test" not in arrays:
            raise DataError(f"{p} has x_train but no x_test. {_HELP}")
        parts = {s: (arrays[f"x_{s}"], arrays.get(f"y_{s}")) for s in ("train", "val", "test")
                 if f"x_{s}" in arrays}
        names = {s: (f"x_{s}", f"y_{s}") for s in parts}
    else:
        xk, x = _pick(arrays, _X_KEYS)
        if x is None:
            if len(arrays) != 1:
                raise DataError(f"{p} holds several arrays ({', '.join(sorted(arrays))}) and none is "
                                f"named {'/'.join(_X_KEYS)}. {_HELP}")
            xk, x = next(iter(arrays.items()))
        yk, y = _pick(arrays, _Y_KEYS)
        parts = {"all": (x, y)}
        names = {"all": (xk, yk)}

    kind = pixels = shape = None
    conv = {}
    for s, (x, y) in parts.items():
        xname, yname = names[s]
        where = f"{p} [{xname}]" if p.suffix in (".npz", ".pt") or len(parts) > 1 else str(p)
        xt, k, pix = _examples(x, where, layout)
        if kind is not None and (k, pix, xt.shape[1:]) != (kind, pixels, shape):
            raise DataError(f"{where} holds examples of shape {tuple(xt.shape[1:])} ({k}); the other "
                            f"split holds {tuple(shape)} ({kind}). All splits must agree.")
        kind, pixels, shape = k, pix, xt.shape[1:]
        conv[s] = (xt, _labels(y, xt.shape[0], f"{p} [{yname}]") if y is not None else None)

    if "all" in conv:
        x, y = conv["all"]
        tr, va, te = fixed_test_split(x.shape[0], seed=seed, what=str(p))
        out = {"train": x[tr], "val": x[va], "test": x[te]}
        labels = {"train": y[tr], "val": y[va], "test": y[te]} if y is not None else {}
    else:
        if "val" not in conv:
            x, y = conv["train"]
            if x.shape[0] < 2:
                raise DataError(f"{p} [x_train] holds {x.shape[0]} example(s); at least 2 are needed to "
                                "hold out a validation split (or give x_val).")
            _, n_val, _ = split_sizes(x.shape[0], test_fraction=0.0)
            keep, val = holdout(x.shape[0], n_val, seed, "val-split")
            conv["val"] = (x[val], None if y is None else y[val])
            conv["train"] = (x[keep], None if y is None else y[keep])
        out = {s: conv[s][0] for s in ("train", "val", "test")}
        labels = {s: conv[s][1] for s in ("train", "val", "test")}
        if any(v is None for v in labels.values()) and any(v is not None for v in labels.values()):
            labels = {}  # labels only for some splits: keep none, a model needs them everywhere
    res = {**out, **{f"{s}_labels": labels.get(s) for s in ("train", "val", "test")}}
    res["_kind"] = (kind, pixels)
    if classes is not None:
        res["_classes"] = classes
    return res


def _channels_first(a: np.ndarray, where: str, layout: str | None) -> np.ndarray:
    """A rank-4 array as (N, C, H, W), by ``layout`` or, without one, by which axis can hold
    the channels (module docstring)."""
    if layout is not None:
        a = a if layout == "NCHW" else a.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        if a.shape[1] not in _CHANNELS:
            raise DataError(f"{where} read as {layout} has {a.shape[1]} channels; images have "
                            "1, 3 or 4. Check the layout entry of the file.")
        return a
    first, last = a.shape[1] in _CHANNELS, a.shape[3] in _CHANNELS
    if first and last:
        raise DataError(
            f"{where} has shape {a.shape}, which reads both as channel-first (N, C, H, W): "
            f"{a.shape[1]} channel(s) of {a.shape[2]} x {a.shape[3]}, and as channel-last "
            f"(N, H, W, C): {a.shape[3]} channel(s) of {a.shape[1]} x {a.shape[2]}. Say which: save "
            "an .npz with the layout beside the images, np.savez(path, x=x, layout='NCHW') or "
            "layout='NHWC'."
        )
    if first:
        return a
    if last:
        return a.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    raise DataError(f"{where} has shape {a.shape}: neither (N, C, H, W) nor (N, H, W, C) "
                    "with C = 1, 3 or 4 channels.")


def _examples(a, where: str, layout: str | None = None) -> tuple[torch.Tensor, str, bool]:
    """Array -> (float32 tensor, kind, pixels?) following the rules of the module docstring;
    ``layout`` ("NCHW" or "NHWC") settles the axes of a rank-4 array."""
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.size == 0 or a.ndim == 0 or a.shape[0] == 0:
        raise DataError(f"{where} is empty (shape {a.shape}); it must hold at least one example.")
    if not (np.issubdtype(a.dtype, np.number)):
        raise DataError(f"{where} holds {a.dtype} values; expected numbers.")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise DataError(f"{where} holds complex values; expected real numbers.")
    if a.ndim not in (1, 2, 3, 4):
        raise DataError(
            f"{where} has rank {a.ndim} (shape {a.shape}); expected (N,) or (N, D) vectors, or images "
            "(N, H, W), (N, C, H, W) or (N, H, W, C)."
        )
    if a.ndim == 4:
        a = _channels_first(a, where, layout)
    if a.dtype == np.uint8:
        x = torch.from_numpy(np.ascontiguousarray(a).astype(np.float32) / np.float32(255.0))
        if x.dim() == 3:
            x = x.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
        return x, ("vector" if x.dim() == 2 else "image"), True
    x = torch.from_numpy(np.ascontiguousarray(a).astype(np.float32))
    if np.issubdtype(a.dtype, np.floating):
        check_finite(torch.from_numpy(np.ascontiguousarray(a)), where)  # before float32 overflow hides it
    check_finite(x, where)
    if x.dim() == 1:
        return x.unsqueeze(1), "vector", False  # (N,) -> (N, 1)
    if x.dim() == 2:
        return x, "vector", False
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(
            f"{where} has shape {a.shape} and is read as images, but its {a.dtype} values lie in "
            f"[{lo:.4g}, {hi:.4g}]. Give images as uint8 (0..255) or floats in [0, 1], or flatten "
            "them to (N, D) to use them as vectors."
        )
    if x.dim() == 3:
        x = x.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    return x, "image", True


def _labels(y, n: int, where: str) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{where} has shape {y.shape}; expected one label per example, ({n},).")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataError(f"{where} must hold integer class labels; got {y.dtype} values.")
    if y.size and y.min() < 0:
        raise DataError(f"{where} holds the negative label {y.min()}; labels must be 0..K-1.")
    return torch.from_numpy(y.astype(np.int64))


def _num_classes(splits: dict, classes) -> int | None:
    ys = [splits.get(f"{s}_labels") for s in ("train", "val", "test")]
    if any(y is None for y in ys):
        return None
    if classes is not None:
        return len(classes)
    return int(max(int(y.max()) for y in ys if y.numel())) + 1
