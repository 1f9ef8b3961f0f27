"""Readers for the standard files of the image data sets, with checks that name the file.

* IDX (MNIST, Fashion-MNIST): parsed straight from the bytes with ``numpy.frombuffer``,
  gzip-compressed or not. The magic number, the rank, the element type and the exact length
  are checked, and the gzip CRC catches a damaged ``.gz``, so a truncated or corrupt file
  gives a :class:`~probgen.errors.DataError` naming it instead of a shape error later.
  Format: LeCun et al., "Gradient-based learning applied to document recognition" (1998),
  and http://yann.lecun.com/exdb/mnist/.
* CIFAR-10 batches (Krizhevsky, "Learning multiple layers of features from tiny images",
  2009), the Python version (``cifar-10-batches-py``: pickled dicts, read with an unpickler
  that only rebuilds NumPy arrays and plain containers, never arbitrary objects) or the
  binary version (``cifar-10-batches-bin``: records of 1 label byte + 3,072 pixel bytes),
  from a folder or straight from the ``.tar.gz`` archive.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from probgen.errors import DataError

__all__ = ["read_bytes", "read_idx", "read_cifar_pickle", "read_cifar_binary", "read_tar_members"]

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_REDOWNLOAD = "Replace it with a fresh copy of the file."


def read_bytes(path: str | Path) -> bytes:
    """The content of ``path``, decompressed when it ends in ``.gz``; errors name the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}.") from e
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as e:
        raise DataError(f"{path} is truncated: the gzip stream ends early. {_REDOWNLOAD}") from e
    except (OSError, zlib.error) as e:  # BadGzipFile is an OSError; CRC and length checks too
        raise DataError(f"{path} is not a valid gzip file ({e}). {_REDOWNLOAD}") from e


def read_idx(path: str | Path, *, ndim: int, data: bytes | None = None) -> np.ndarray:
    """An IDX array of rank ``ndim`` (read-only view on the file's bytes).

    Parameters
    ----------
    path : path
        The file (``.gz`` or not); used in messages when ``data`` is given.
    ndim : int
        Expected rank: 3 for images (N, H, W), 1 for labels (N,).
    data : bytes, optional
        The file's (decompressed) content, when already read.
    """
    path = Path(path)
    raw = read_bytes(path) if data is None else data
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(
            f"{path} is not an IDX file (first bytes {raw[:4].hex() or 'missing'}; expected "
            f"00 00 <type> <rank>). {_REDOWNLOAD}"
        )
    if raw[3] != ndim:
        raise DataError(f"{path} holds an IDX array of rank {raw[3]}; expected rank {ndim}.")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, shorter than its {header}-byte header.")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"{path} is {problem}: {len(raw):,} bytes, expected {expected:,} for an array of shape "
            f"{dims}. {_REDOWNLOAD}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds NumPy arrays and plain containers; refuses every other global."""

    _ALLOWED = {
        ("_codecs", "encode"),  # how pickle protocol <= 2 stores bytes in Python 3
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if name == "_reconstruct":
            return np.zeros(1).__reduce__()[0]  # numpy's own _reconstruct, without its module path
        if name == "encode":
            import codecs

            return codecs.encode
        return getattr(np, name)


def read_cifar_pickle(path: str | Path, data: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 Python batch -> ``(images (N, 3, 32, 32) uint8, labels (N,) int64)``."""
    path = Path(path)
    raw = read_bytes(path) if data is None else data
    try:
        d = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{path} is not a readable CIFAR-10 batch ({e}). {_REDOWNLOAD}") from e
    if not isinstance(d, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch: it holds a {type(d).__name__}, not a dict.")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise DataError(f"{path} is not a CIFAR-10 batch: keys {sorted(map(str, d))}, expected 'data' and 'labels'.")
    x = np.asarray(d["data"])
    y = np.asarray(d["labels"], dtype=np.int64)
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or x.shape[0] != y.shape[0]:
        raise DataError(
            f"{path}: expected 'data' uint8 of shape (N, 3072) and N labels; got {x.dtype} "
            f"{x.shape} and {y.shape[0]} labels. {_REDOWNLOAD}"
        )
    return x.reshape(-1, 3, 32, 32), y  # (N, 3072) -> (N, C, H, W), channels stored R, G, B


def read_cifar_binary(path: str | Path, data: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch (records of 1 + 3,072 bytes) -> images (N, 3, 32, 32), labels (N,)."""
    path = Path(path)
    raw = read_bytes(path) if data is None else data
    rec = 1 + 3 * 32 * 32
    if len(raw) == 0 or len(raw) % rec:
        raise DataError(
            f"{path} is truncated or corrupt: {len(raw):,} bytes is not a whole number of "
            f"{rec}-byte CIFAR-10 records. {_REDOWNLOAD}"
        )
    a = np.frombuffer(raw, dtype=np.uint8).reshape(-1, rec)  # (N, 1 + 3072)
    return a[:, 1:].reshape(-1, 3, 32, 32), a[:, 0].astype(np.int64)


def read_tar_members(path: str | Path, names: list[str]) -> dict[str, bytes]:
    """The content of the members of archive ``path`` whose base names are in ``names``."""
    path = Path(path)
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in names:
                    out[base] = tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path} is truncated or not a valid tar archive ({e}). {_REDOWNLOAD}") from e
    missing = [n for n in names if n not in out]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}; is it the CIFAR-10 archive?")
    return out
