"""The exceptions quantize_rs raises.

Every error of the engine is a :class:`QuantizeError`. Each subclass also derives from the builtin
exception a Python caller would expect, so ``except OSError`` or ``except ValueError`` keep working:

=========================  =====================  ===============================================
class                      also a                 raised when
=========================  =====================  ===============================================
:class:`FileError`         :class:`OSError`       a file cannot be read or written, the output
                                                  folder is missing, or the output is the input
                                                  and ``force=True`` was not given
                                                  (``.filename``, ``.errno``)
:class:`ModelError`        :class:`ValueError`    the model is not valid ONNX or cannot be
                                                  quantized as asked (``.tensor``, ``.node``)
:class:`DataError`         :class:`ValueError`    calibration or verification data does not fit
                                                  the model (``.input``: the model input,
                                                  ``.filename``: the file, ``None`` for arrays)
:class:`RecipeError`       :class:`ValueError`    an option has a bad value (``.key``: the keyword
                                                  argument, e.g. ``"block_size"``)
:class:`NothingQuantizedError` :class:`ValueError` nothing was selected for quantization (pass
                                                  ``allow_empty=True`` to write the model anyway)
:class:`QualityGateError`  --                     a quality gate (``min_snr_db``,
                                                  ``max_size_ratio``) failed (``.gate``)
:class:`InferenceError`    :class:`RuntimeError`  the model could not be run (calibration,
                                                  verification, validation)
=========================  =====================  ===============================================

Messages name keyword arguments (``force=True``), not the command-line flags of ``quantize-rs``.
"""

from __future__ import annotations

import errno as _errno
import re
from typing import Any, Mapping, Optional

__all__ = [
    "QuantizeError",
    "FileError",
    "ModelError",
    "DataError",
    "RecipeError",
    "NothingQuantizedError",
    "QualityGateError",
    "InferenceError",
]


class QuantizeError(Exception):
    """Base class of every error quantize_rs raises."""


class FileError(QuantizeError, OSError):
    """A file could not be read or written, the output folder does not exist, or the output is
    the input model and ``force=True`` was not given. ``.filename`` names the file, ``.errno`` is
    the operating system's error number when there is one."""

    def __init__(self, message: str, filename: Optional[str] = None, errno: Optional[int] = None) -> None:
        OSError.__init__(self, message)
        self.filename = filename
        self.errno = errno
        self.strerror = message

    def __str__(self) -> str:
        return str(self.strerror)


class ModelError(QuantizeError, ValueError):
    """The model is not a valid ONNX model, or cannot be quantized as asked (a NaN weight, an
    op whose opset cannot be raised, a bad attribute). ``.tensor`` / ``.node`` name the part
    concerned when there is one, ``.filename`` the model file when it did not decode."""

    def __init__(
        self, message: str, filename: Optional[str] = None, tensor: Optional[str] = None, node: Optional[str] = None
    ) -> None:
        super().__init__(message)
        self.filename = filename
        self.tensor = tensor
        self.node = node


class DataError(QuantizeError, ValueError):
    """Calibration or verification data does not fit the model: wrong shape, type, names or
    values. ``.input`` is the model input concerned (or ``None``), ``.filename`` the data file
    (``None`` when the data was given as arrays; the message then names the argument, e.g.
    ``calibration_data[3]`` for the fourth sample of a reader)."""

    def __init__(self, message: str, input: Optional[str] = None, filename: Optional[str] = None) -> None:
        super().__init__(message)
        self.input = input
        self.filename = filename


class RecipeError(QuantizeError, ValueError):
    """An option has a bad value, or options contradict each other. ``.key`` is the keyword
    argument concerned (``"bits"``, ``"block_size"``, ``"method"``)."""

    def __init__(self, message: str, key: Optional[str] = None) -> None:
        super().__init__(message)
        self.key = key


class NothingQuantizedError(QuantizeError, ValueError):
    """No weight was selected for quantization (every candidate was excluded, too small or of
    another op type). Pass ``allow_empty=True`` to write the model anyway."""


class QualityGateError(QuantizeError):
    """A quality gate of the recipe failed: the output SNR on ``verify_data`` is below
    ``min_snr_db``, or the output is larger than ``max_size_ratio`` of the input. ``.gate`` is the
    keyword of the gate. No output is written."""

    def __init__(self, message: str, gate: Optional[str] = None) -> None:
        super().__init__(message)
        self.gate = gate


class InferenceError(QuantizeError, RuntimeError):
    """The model could not be run (for calibration, verification or validation), e.g. an op the
    inference engine (tract) does not support. ``.model`` says which model."""

    def __init__(self, message: str, model: Optional[str] = None) -> None:
        super().__init__(message)
        self.model = model


# --- from the engine's errors ---------------------------------------------------------------------

# Command-line flags in the engine's messages, and the keyword arguments that say the same here.
_FLAGS = [
    (re.compile(r"--exclude '([^']*)'"), lambda m: "exclude=[%r]" % m.group(1)),
    (re.compile(r"--force\b"), lambda m: "force=True"),
    (re.compile(r"--allow-empty\b"), lambda m: "allow_empty=True"),
    (re.compile(r"--per-tensor\b"), lambda m: "per_channel=False"),
    (re.compile(r"--op-types\b"), lambda m: "op_types=[...]"),
    (re.compile(r"--block-size\b"), lambda m: "block_size"),
    (re.compile(r"--input-shape\b"), lambda m: "input_shapes"),
    (re.compile(r"--data\b"), lambda m: "data=..."),
    (re.compile(r"--runs\b"), lambda m: "runs"),
    (re.compile(r"\bverify-data\b"), lambda m: "verify_data"),
    (re.compile(r"\bmin-snr-db\b"), lambda m: "min_snr_db"),
    (re.compile(r"\bmax-size-ratio\b"), lambda m: "max_size_ratio"),
    (re.compile(r"\btarget-snr-db\b"), lambda m: "target_snr_db"),
]

# Recipe keys (kebab-case, as the engine names them) whose keyword argument is not simply the last
# part of the key in snake_case; the prefixes also cover the keys under them.
_KEYS = {
    "calibration": "calibration_data",
    "calibration.data": "calibration_data",
}
_KEY_PREFIXES = {
    "calibration.op-types": "activation_op_types",
    "calibration.op_types": "activation_op_types",
    "calibration.image": "image",
}


def keyword_of(key: str) -> str:
    """The keyword argument for an engine recipe key: ``calibration.percentile`` -> ``percentile``,
    ``layer-bits.conv*`` -> ``layer_bits``, ``exclude[0]`` -> ``exclude``, ``--runs`` -> ``runs``."""
    key = key.strip().lstrip("-")
    if key in _KEYS:
        return _KEYS[key]
    for prefix, keyword in _KEY_PREFIXES.items():
        if key == prefix or key.startswith(prefix + ".") or key.startswith(prefix + "["):
            return keyword
    if key.startswith("calibration."):
        key = key[len("calibration.") :]
    key = re.split(r"[.\[]", key, maxsplit=1)[0]
    return key.replace("-", "_") or "recipe"


def keywordize(message: str) -> str:
    """``message`` with the engine's command-line flags replaced by keyword arguments."""
    for pattern, repl in _FLAGS:
        message = pattern.sub(repl, message)
    return message


def from_engine(
    kind: str,
    message: str,
    details: Mapping[str, Any],
    rename: Optional[Mapping[str, str]] = None,
    data_names: Optional[Mapping[str, str]] = None,
) -> QuantizeError:
    """The public exception for an engine error.

    ``rename`` maps keyword names to the caller's (``samples`` -> ``num_samples``); ``data_names``
    maps temporary data paths (in-memory data written to files) to what the caller passed
    (``calibration_data``), in messages and ``.filename``.
    """
    rename = dict(rename or {})
    filename = details.get("filename")
    in_memory = False
    for tmp, name in (data_names or {}).items():
        if tmp and tmp in message:
            message = message.replace(tmp, name)
            in_memory = True
        if isinstance(filename, str) and filename.startswith(tmp):
            filename = None
            in_memory = True
    # Per-sample files of a reader/iterable: `name/sample-00000003.npz` -> `name[3]`.
    if in_memory:
        message = re.sub(r"([A-Za-z_]+)[/\\]sample-0*(\d+)\.np[yz]", r"\1[\2]", message)
    message = keywordize(message)
    if kind in ("read", "write", "overwrite", "missing_dir"):
        code = details.get("errno")
        if code is None:
            code = {"overwrite": _errno.EEXIST, "missing_dir": _errno.ENOENT}.get(kind)
        return FileError(message, filename=filename, errno=code)
    if kind == "model":
        return ModelError(message, filename=filename, tensor=details.get("tensor"), node=details.get("node"))
    if kind == "data":
        return DataError(message, input=details.get("input"), filename=filename)
    if kind == "option":
        key = keyword_of(str(details.get("key", "")))
        key = rename.get(key, key)
        # The engine's message starts with its own key path; the caller knows the keyword.
        raw = str(details.get("key", ""))
        if raw and message.startswith(raw + ":"):
            shown = key
            if raw.startswith("layer-bits.") or raw.startswith("layer_bits."):
                shown = f"{key}[{raw.split('.', 1)[1]!r}]"
            message = shown + ":" + message[len(raw) + 1 :]
        return RecipeError(message, key=key)
    if kind == "nothing":
        return NothingQuantizedError(message)
    if kind == "gate":
        gate = keyword_of(str(details.get("gate", "")))
        return QualityGateError(message, gate=gate)
    if kind == "inference":
        return InferenceError(message, model=details.get("model"))
    return QuantizeError(message)
