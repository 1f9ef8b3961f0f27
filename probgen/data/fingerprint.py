"""The identity of a data set: what a run folder records about the data it was trained on.

:func:`data_fingerprint` describes a loaded :class:`~probgen.data.Dataset` by its name, kind,
per-example shape, split sizes and preprocessing (binarisation, value range), and by its
content: the size and SHA-256 of each source file when the data come from files (the user's
``.npy``/``.npz``/``.pt``, the MNIST IDX files), else the SHA-256 of each split's values and
labels (bundled and toy sets, folders of images). :func:`fingerprint_changes` compares two
fingerprints and says, one sentence per difference, what changed.

A fingerprint is plain JSON (it lives in ``config.json``). A file that moved but kept its
bytes is the same data; a file regenerated with other values, another ``--data-root`` that
holds other files, another ``--limit`` or another binarisation is not.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from probgen.data.base import SPLITS, Dataset

__all__ = ["data_fingerprint", "fingerprint_changes", "FINGERPRINT_VERSION"]

FINGERPRINT_VERSION = 1
_CHUNK = 1 << 24  # bytes hashed at a time


def data_fingerprint(data: Dataset) -> dict:
    """A JSON-able description of ``data`` that changes when the data change.

    Returns
    -------
    dict
        ``version``, ``name``, ``kind``, ``shape``, ``splits`` (examples per split),
        ``preprocessing`` (``binarize``, ``value_range``, the dequantization ``bin_width``), and ``files`` (``path``, ``bytes``,
        ``sha256`` of each source file) or ``arrays`` (``sha256`` of each split's values and
        labels, when the data do not come from plain files).
    """
    fp = {
        "version": FINGERPRINT_VERSION,
        "name": str(data.name),
        "kind": data.kind,
        "shape": [int(s) for s in data.shape],
        "splits": {s: int(data.split(s).shape[0]) for s in SPLITS},
        "preprocessing": {"binarize": data.binarize,
                          "value_range": [float(v) for v in data.value_range],
                          "bin_width": getattr(data, "bin_width", None)},
    }
    files = [Path(p) for p in (data.extra or {}).get("files", [])]
    if files and all(p.is_file() for p in files):
        fp["files"] = [_file_entry(p) for p in files]
    else:
        fp["arrays"] = {s: _tensors_sha256(data.split(s), data.labels(s)) for s in SPLITS}
    return fp


def fingerprint_changes(old: dict, new: dict) -> list[str]:
    """What differs from the fingerprint ``old`` to ``new``, one sentence each (``[]``: the
    same data)."""
    out = []
    if old.get("name") != new.get("name"):
        out.append(f"the data set was {old.get('name')!r} and is now {new.get('name')!r}")
    if "files" in old and "files" in new:
        out += _file_changes(old["files"], new["files"])
    elif "arrays" in old and "arrays" in new:
        for split in SPLITS:
            a, b = old["arrays"].get(split), new["arrays"].get(split)
            if a != b:
                out.append(f"the values of the {split} split changed (sha256 {_short(a)} -> {_short(b)})")
    elif "files" in old or "files" in new:
        was = ", ".join(f["path"] for f in old.get("files", [])) or "arrays, not files"
        now = ", ".join(f["path"] for f in new.get("files", [])) or "arrays, not files"
        out.append(f"the data came from {was} and now come from {now}")
    for key, what in (("kind", "kind"), ("shape", "shape of one example")):
        if old.get(key) != new.get(key):
            out.append(f"the {what} was {_show(old.get(key))} and is now {_show(new.get(key))}")
    for split in SPLITS:
        a, b = old.get("splits", {}).get(split), new.get("splits", {}).get(split)
        if a != b:
            out.append(f"the {split} split had {_count(a)} examples and has {_count(b)}")
    pa, pb = old.get("preprocessing", {}), new.get("preprocessing", {})
    for key in sorted(set(pa) | set(pb)):
        if pa.get(key) != pb.get(key):
            out.append(f"{key} was {_show(pa.get(key))} and is now {_show(pb.get(key))}")
    return out


def _file_changes(old: list[dict], new: list[dict]) -> list[str]:
    out = []
    if len(old) != len(new):
        return [f"the data came from {len(old)} file(s) ({', '.join(f['path'] for f in old)}) "
                f"and now come from {len(new)} ({', '.join(f['path'] for f in new)})"]
    for a, b in zip(old, new):
        if (a.get("bytes"), a.get("sha256")) == (b.get("bytes"), b.get("sha256")):
            continue  # the same bytes, wherever they now are
        where = a["path"] if a["path"] == b["path"] else f"{a['path']} (now {b['path']})"
        out.append(f"the file {where} changed: {_count(a.get('bytes'))} bytes, sha256 "
                   f"{_short(a.get('sha256'))} -> {_count(b.get('bytes'))} bytes, sha256 "
                   f"{_short(b.get('sha256'))}")
    return out


def _file_entry(p: Path) -> dict:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return {"path": os.path.abspath(p), "bytes": p.stat().st_size, "sha256": h.hexdigest()}


def _tensors_sha256(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none;")
            continue
        a = t.detach().cpu().contiguous().numpy()
        h.update(f"{a.dtype.str}{a.shape};".encode())
        flat = memoryview(a.reshape(-1).view("uint8"))
        for start in range(0, len(flat), _CHUNK):
            h.update(flat[start:start + _CHUNK])
    return h.hexdigest()


def _short(h) -> str:
    return "none" if not h else f"{h[:12]}..."


def _count(n) -> str:
    return "?" if n is None else f"{n:,}"


def _show(v) -> str:
    return repr(tuple(v)) if isinstance(v, list) else repr(v)
