"""Calibration and verification data given in memory, written to the files the engine reads.

The engine reads samples from ``.npy``/``.npz`` files and folders of them (see the Rust crate's
``data`` module). In-memory data is written in exactly those formats with numpy's own writers and
passed as a path, so it goes through the same checks as a file, and gives byte-identical output
to the same data saved with ``numpy.save`` / ``numpy.savez``:

- a path (``str`` or ``os.PathLike``): used as it is (every format the command line reads);
- an array (anything ``numpy.asarray`` takes that has ``__array__``): ``data.npy``
  (a model with one input; samples stacked on axis 0, or a batch along it);
- a mapping of input name to array: ``data.npz`` (one array per input);
- an iterable of such mappings (or of arrays, for a one-input model), or an object with
  ``get_next()`` returning a mapping or ``None`` (ONNX Runtime's ``CalibrationDataReader``):
  a folder of ``sample-00000000.npz``, ``sample-00000001.npz``, ... one file per item, taken by
  the engine in that order. Items may have different shapes (images at their own size).

Items are written one at a time while iterating, so a reader is never held in memory whole.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from .exceptions import DataError

__all__ = ["Materialized", "materialize"]


class Materialized:
    """Temporary files holding in-memory data; a context manager that removes them."""

    def __init__(self) -> None:
        self._dir: Optional[str] = None
        # Temporary path -> the argument it stands for, for error messages.
        self.names: Dict[str, str] = {}

    def folder(self) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="quantize-rs-data-")
        return self._dir

    def path(self, data: Any, argument: str, limit: Optional[int] = None) -> Optional[str]:
        """The path of ``data`` (written to a temporary file when it is in memory); ``None``
        stays ``None``. ``limit`` stops draining an iterable or reader after that many items."""
        if data is None:
            return None
        if isinstance(data, (str, os.PathLike)):
            return os.path.abspath(os.fspath(data))
        if isinstance(data, (bytes, bytearray)):
            raise DataError(
                f"{argument}: got bytes; pass a path, an array, a dict of arrays, an iterable of dicts or a reader"
            )
        import numpy as np

        base = os.path.join(self.folder(), argument)
        if isinstance(data, np.ndarray) or (hasattr(data, "__array__") and not isinstance(data, Mapping)):
            path = base + ".npy"
            np.save(path, _array(data, argument, None))
            self.names[path] = argument
            return path
        if isinstance(data, Mapping):
            path = base + ".npz"
            np.savez(path, **_arrays(data, argument))
            self.names[path] = argument
            return path
        items = _items(data, argument)
        os.mkdir(base)
        self.names[base] = argument
        count = 0
        for item in items:
            if limit is not None and count >= limit:
                break
            name = os.path.join(base, "sample-%08d" % count)
            if isinstance(item, Mapping):
                np.savez(name + ".npz", **_arrays(item, f"{argument}[{count}]"))
            elif isinstance(item, np.ndarray) or hasattr(item, "__array__"):
                np.save(name + ".npy", _array(item, f"{argument}[{count}]", None))
            else:
                raise DataError(
                    f"{argument}[{count}]: expected a dict of input name to array (or an array), "
                    f"got {type(item).__name__}"
                )
            count += 1
        if count == 0:
            raise DataError(f"{argument}: no samples (the reader or iterable was empty)")
        return base

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> "Materialized":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def materialize() -> Materialized:
    """A fresh set of temporary data files (use as a context manager)."""
    return Materialized()


def _array(value: Any, argument: str, name: Optional[str]) -> Any:
    import numpy as np

    try:
        return np.asarray(value)
    except Exception as e:  # numpy raises many types for ragged or odd objects
        what = f"{argument}['{name}']" if name is not None else argument
        raise DataError(f"{what}: cannot be converted to an array ({e})", input=name) from None


def _arrays(mapping: Mapping[Any, Any], argument: str) -> Dict[str, Any]:
    out = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise DataError(f"{argument}: keys must be model input names (str), got {key!r}")
        out[key] = _array(value, argument, key)
    return out


def _items(data: Any, argument: str) -> Iterable[Any]:
    get_next = getattr(data, "get_next", None)
    if callable(get_next):

        def drain() -> Iterable[Any]:
            while True:
                item = get_next()
                if item is None:
                    return
                yield item

        return drain()
    try:
        return iter(data)
    except TypeError:
        raise DataError(
            f"{argument}: expected a path, an array, a dict of arrays, an iterable of dicts or an object with "
            f"get_next(), got {type(data).__name__}"
        ) from None


def random_samples(shape: Tuple[int, ...], count: int, seed: int = 0) -> Any:
    """``count`` samples of ``shape``, uniform in [0, 1), float32, stacked on a new axis 0."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.random((count, *shape), dtype=np.float32)


def shape_list(value: Any) -> List[int]:
    return [int(d) for d in value]
