"""The public functions and the :class:`Recipe`."""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import _quantize_rs as _native
from ._data import materialize, random_samples
from ._results import Benchmark, ModelInfo, QuantizeResult, Validation
from .exceptions import RecipeError, from_engine

__all__ = [
    "ImagePreprocess",
    "Recipe",
    "run",
    "quantize",
    "quantize_with_calibration",
    "quantize_static",
    "quantize_dynamic",
    "model_info",
    "validate",
    "benchmark",
]

PathLike = Union[str, "os.PathLike[str]"]


# --- recipe -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePreprocess:
    """How a folder of ``.png``/``.jpg`` images becomes model inputs (calibration or verification
    data): each image is converted to RGB (or gray), resized to ``size`` (height, width),
    put in ``channels`` order, multiplied by ``scale``, has ``mean`` subtracted and is divided by
    ``std`` (one value, or one per channel), laid out as ``[1, C, H, W]`` (``nchw``) or
    ``[1, H, W, C]`` (``nhwc``)."""

    size: Tuple[int, int]
    layout: str = "nchw"
    channels: str = "rgb"
    scale: float = 1.0 / 255.0
    mean: Sequence[float] = field(default_factory=tuple)
    std: Sequence[float] = field(default_factory=tuple)

    def _engine(self) -> Dict[str, Any]:
        return {
            "size": [int(s) for s in self.size],
            "layout": self.layout,
            "channels": self.channels,
            "scale": float(self.scale),
            "mean": [float(x) for x in self.mean],
            "std": [float(x) for x in self.std],
        }


# keyword -> (engine key, under `calibration`)
_WEIGHT_KEYS = {
    "bits": "bits",
    "unsigned": "unsigned",
    "per_channel": "per-channel",
    "block_size": "block-size",
    "symmetric": "symmetric",
    "weight_range": "weight-range",
    "native_int4": "native-int4",
    "exclude": "exclude",
    "include": "include",
    "op_types": "op-types",
    "min_elements": "min-elements",
    "layer_bits": "layer-bits",
    "allow_empty": "allow-empty",
    "dynamic": "dynamic",
    "verify_data": "verify-data",
    "min_snr_db": "min-snr-db",
    "max_size_ratio": "max-size-ratio",
}
_CALIBRATION_KEYS = {
    "calibration_data": "data",
    "method": "method",
    "percentile": "percentile",
    "samples": "samples",
    "symmetric_activations": "symmetric-activations",
    "full_range_weights": "full-range-weights",
    "bias_correction": "bias-correction",
    "graph_rewrites": "graph-rewrites",
    "equalize": "equalize",
    "activation_op_types": "op-types",
    "target_snr_db": "target-snr-db",
    "image": "image",
    "weight_only": "weight-only",
    "weight_rounding": "weight-rounding",
}
_LISTS = ("exclude", "include", "op_types", "activation_op_types")
_DATA_KEYS = ("calibration_data", "verify_data")


class Recipe:
    """What to quantize and how: the engine's one description of a job (the same keys as the
    command line's config files and Cargo metadata, in snake_case). Every keyword left out takes
    the engine's default (shown by :meth:`resolved`); the recipe is checked when built, and a bad
    value raises :class:`RecipeError` naming the keyword.

    Weights:
        bits: 8 or 4 (default 8).
        unsigned: uint8/uint4 instead of int8/int4 (default False).
        per_channel: one scale per output channel, else per tensor (default True).
        block_size: blocks of this many elements along the reduction axis (opset 21).
        symmetric: True for symmetric weights, False for asymmetric (default: per scale,
            whichever reconstructs the weights better; symmetric for integer kernels;
            asymmetric for weights rounded on calibration data by GPTQ).
        weight_range: ``"mse"`` (default) searches each scale's range for the least squared
            error; ``"minmax"`` keeps the full range.
        native_int4: store 4-bit values two per byte as ONNX INT4 (opset 21).
        exclude / include: tensor or node name globs never / only quantized.
        op_types: op types whose weights are quantized (default Conv, ConvTranspose, Gemm,
            MatMul, Gather).
        min_elements: weights with fewer elements stay float (default 128).
        layer_bits: ``{glob: 4 | 8 | 32}`` bits per tensor or node (32 keeps it float).
        allow_empty: write the model even when nothing was quantized.

    Dynamic quantization (no calibration data):
        dynamic: MatMul/Gemm run on int8 with their inputs quantized at run time
            (DynamicQuantizeLinear + MatMulInteger), what ONNX Runtime runs fastest for
            transformers (default False).

    Static quantization (activations calibrated on data; any of these needs ``calibration_data``):
        calibration_data: a path (``.npy``, ``.npz``, ``.safetensors``, a folder of them or of
            images), an array, a dict of input name to array, an iterable of such dicts, or a
            reader with ``get_next()`` (ONNX Runtime's ``CalibrationDataReader``).
        method: ``"minmax"`` (default), ``"percentile"``, ``"entropy"`` or ``"mse"``.
        percentile: for ``"percentile"`` (default 99.99).
        samples: use at most this many samples.
        symmetric_activations: int8 activations with zero point 0 instead of asymmetric uint8.
        full_range_weights: 8-bit weights for integer-kernel ops (default: 7 bits, which ONNX
            Runtime's x86 kernels without VNNI cannot overflow).
        bias_correction: correct biases for the mean shift of quantized weights (MinMax; default True).
        graph_rewrites: fold affine ops, fuse hard-swish, rewrite middle-axis softmax (default True).
        equalize: cross-layer equalization of consecutive convolutions before calibrating
            (default False).
        activation_op_types: op types whose activations are quantized.
        target_snr_db: return the worst activations to float until the output SNR on
            ``verify_data`` reaches this; with ``weight_only``, step the worst 4-bit weights to
            8 bits, then the worst weights to float (``result.report.target`` lists them).
        image: :class:`ImagePreprocess` (or a dict of its fields) for a folder of images.
        weight_only: use ``calibration_data`` for the weights only: each layer's rounding chosen
            to minimise its output error on the samples, biases corrected; no activation is
            quantized (default False).
        weight_rounding: ``"gptq"`` (default), ``"adaround"`` or ``"nearest"``, how weights are rounded
            with data.

    Verification and gates:
        verify_data: held-out samples (same forms as ``calibration_data``) to measure the output on.
        min_snr_db: fail (:class:`QualityGateError`) below this output SNR on ``verify_data``.
        max_size_ratio: fail when the output is larger than this fraction of the input.
    """

    def __init__(
        self,
        *,
        bits: Optional[int] = None,
        unsigned: Optional[bool] = None,
        per_channel: Optional[bool] = None,
        block_size: Optional[int] = None,
        symmetric: Optional[bool] = None,
        weight_range: Optional[str] = None,
        native_int4: Optional[bool] = None,
        exclude: Optional[Union[str, Iterable[str]]] = None,
        include: Optional[Union[str, Iterable[str]]] = None,
        op_types: Optional[Union[str, Iterable[str]]] = None,
        min_elements: Optional[int] = None,
        layer_bits: Optional[Mapping[str, int]] = None,
        allow_empty: Optional[bool] = None,
        dynamic: Optional[bool] = None,
        calibration_data: Any = None,
        method: Optional[str] = None,
        percentile: Optional[float] = None,
        samples: Optional[int] = None,
        symmetric_activations: Optional[bool] = None,
        full_range_weights: Optional[bool] = None,
        bias_correction: Optional[bool] = None,
        graph_rewrites: Optional[bool] = None,
        equalize: Optional[bool] = None,
        activation_op_types: Optional[Union[str, Iterable[str]]] = None,
        target_snr_db: Optional[float] = None,
        image: Optional[Union[ImagePreprocess, Mapping[str, Any]]] = None,
        weight_only: Optional[bool] = None,
        weight_rounding: Optional[str] = None,
        verify_data: Any = None,
        min_snr_db: Optional[float] = None,
        max_size_ratio: Optional[float] = None,
    ) -> None:
        values = dict(locals())
        del values["self"]
        self._values: Dict[str, Any] = {k: v for k, v in values.items() if v is not None}
        for k in _LISTS:
            if isinstance(self._values.get(k), str):
                self._values[k] = [self._values[k]]
            elif k in self._values:
                self._values[k] = list(self._values[k])
        if "calibration_data" not in self._values:
            for k in _CALIBRATION_KEYS:
                if k in self._values:
                    raise RecipeError(
                        f"{k}: applies to static quantization; pass calibration_data too (samples to calibrate on)",
                        key=k,
                    )
        # Check now, with placeholders for in-memory data.
        _resolve(self._engine({k: "<data>" for k in _DATA_KEYS}))

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with ``changes`` applied (``None`` removes a keyword: back to the default)."""
        values = dict(self._values)
        values.update(changes)
        return Recipe(**{k: v for k, v in values.items() if v is not None})

    def to_dict(self) -> Dict[str, Any]:
        """The keywords given (defaults left out)."""
        return dict(self._values)

    def resolved(self) -> Dict[str, Any]:
        """The engine's complete recipe (kebab-case keys, as in config files), every default filled in."""
        return _resolve(self._engine({k: "<data>" for k in _DATA_KEYS}))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" if k not in _DATA_KEYS or isinstance(v, (str, os.PathLike)) else f"{k}=<{type(v).__name__}>" for k, v in self._values.items())
        return f"Recipe({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Recipe) and self._values == other._values

    def _data(self, key: str) -> Any:
        return self._values.get(key)

    def _engine(self, data_paths: Mapping[str, Optional[str]]) -> Dict[str, Any]:
        """The engine's JSON recipe, with the data at ``data_paths``."""
        out: Dict[str, Any] = {}
        cal: Dict[str, Any] = {}
        for k, v in self._values.items():
            if k in _DATA_KEYS:
                v = data_paths.get(k)
                if v is None:
                    continue
            elif k == "image":
                v = v._engine() if isinstance(v, ImagePreprocess) else dict(v)
            elif k == "layer_bits":
                v = dict(v)
            if k in _WEIGHT_KEYS:
                out[_WEIGHT_KEYS[k]] = v
            else:
                cal[_CALIBRATION_KEYS[k]] = v
        if cal:
            out["calibration"] = cal
        return out


def _call(
    function: str,
    request: Mapping[str, Any],
    rename: Optional[Mapping[str, str]] = None,
    data_names: Optional[Mapping[str, str]] = None,
) -> Any:
    """Calls the native module (one JSON request, one JSON reply), raising the public exception
    for an engine error."""
    reply = json.loads(getattr(_native, function)(json.dumps(request)))
    if "error" in reply:
        e = reply["error"]
        raise from_engine(e["kind"], e["message"], e.get("details") or {}, rename=rename, data_names=data_names) from None
    return reply["ok"]


def _resolve(engine: Mapping[str, Any]) -> Dict[str, Any]:
    return _call("resolve_recipe", engine)


def _path(p: PathLike) -> str:
    return os.path.abspath(os.fspath(p))


# --- the job ------------------------------------------------------------------------------------


def run(
    input: PathLike,
    output: PathLike,
    recipe: Optional[Recipe] = None,
    *,
    force: bool = False,
    progress: bool = False,
    **options: Any,
) -> QuantizeResult:
    """Quantizes the model at ``input`` into ``output`` as ``recipe`` says (keyword ``options``
    are :class:`Recipe` keywords applied on top). This is what every other quantize function
    calls.

    The output's folder must exist; ``output`` may be the input only with ``force=True``. Nothing
    is written when an error or a quality gate stops the job. The GIL is released while the
    engine works; Ctrl-C raises ``KeyboardInterrupt`` within a fraction of a second and nothing
    is written (the engine's current job is abandoned in the background: it has no way to be
    stopped early yet). ``progress=True`` shows a progress bar over calibration samples when
    stderr is a terminal.

    Returns a :class:`QuantizeResult`.
    """
    recipe = recipe if recipe is not None else Recipe()
    if options:
        recipe = recipe.replace(**options)
    return _run(input, output, recipe, force=force, progress=progress)


def _run(
    input: PathLike,
    output: PathLike,
    recipe: Recipe,
    *,
    force: bool,
    progress: bool,
    rename: Optional[Mapping[str, str]] = None,
    data_argument: str = "calibration_data",
) -> QuantizeResult:
    with materialize() as data:
        samples = recipe._data("samples")
        paths = {
            "calibration_data": data.path(recipe._data("calibration_data"), data_argument, limit=samples),
            "verify_data": data.path(recipe._data("verify_data"), "verify_data"),
        }
        request = {
            "input": _path(input),
            "output": _path(output),
            "recipe": recipe._engine(paths),
            "base_dir": os.getcwd(),
            "force": bool(force),
            "progress": bool(progress),
        }
        out = _call("run", request, rename=rename, data_names=data.names)
    return QuantizeResult._of(out)


def _globs(names: Optional[Iterable[str]]) -> List[str]:
    """Exact names as globs matching only themselves."""
    return [re.sub(r"([*?\[\]{}])", r"[\1]", n) for n in (names or [])]

def _original_recipe(bits, per_channel, min_elements, layer_bits, native_int4, symmetric, excluded_layers, options):
    """The Recipe behind the original package's calls: their keywords, then any Recipe keyword."""
    exclude = list(options.pop("exclude", None) or []) + _globs(excluded_layers)
    return Recipe(
        bits=bits,
        per_channel=per_channel,
        min_elements=min_elements,
        layer_bits=layer_bits,
        native_int4=native_int4 or None,
        symmetric=symmetric,
        exclude=exclude or None,
        **options,
    )



def quantize(
    input_path: PathLike,
    output_path: PathLike,
    bits: int = 8,
    per_channel: Optional[bool] = None,
    excluded_layers: Optional[Iterable[str]] = None,
    min_elements: Optional[int] = None,
    layer_bits: Optional[Mapping[str, int]] = None,
    native_int4: bool = False,
    symmetric: Optional[bool] = None,
    *,
    force: bool = False,
    **options: Any,
) -> QuantizeResult:
    """Weight-only quantization: every Conv/ConvTranspose/Gemm/MatMul/Gather weight to ``bits``
    (8 or 4) bits behind a DequantizeLinear; activations stay float. The original package's call,
    unchanged.

    Args:
        input_path: the float ONNX model.
        output_path: where to write the quantized model (its folder must exist).
        bits: 8 or 4.
        per_channel: one scale per output channel (default True here; the original package's
            default was False).
        excluded_layers: tensor or node names left float (exact names; ``exclude=`` takes globs).
        min_elements: weights with fewer elements stay float (default 128 here, 0 in the original).
        layer_bits: bits per tensor or node name (or glob): 4, 8, or 32 to keep it float.
        native_int4: store 4-bit values two per byte as ONNX INT4 (opset 21).
        symmetric: symmetric weights (default True here; the original package's default was False).
        force: allow ``output_path`` to be ``input_path``.
        **options: any other :class:`Recipe` keyword (``include``, ``op_types``, ``block_size``,
            ``verify_data``, ``min_snr_db``, ...).

    Returns a :class:`QuantizeResult`; raises a :class:`QuantizeError` subclass on failure.
    """
    progress = bool(options.pop("progress", False))
    recipe = _original_recipe(
        bits, per_channel, min_elements, layer_bits, native_int4, symmetric, excluded_layers, options
    )
    return _run(input_path, output_path, recipe, force=force, progress=progress)


def _method(method: Any) -> Tuple[str, Optional[float]]:
    """``"minmax"``, ``"percentile:99.9"``, or an ONNX Runtime ``CalibrationMethod``."""
    name = str(getattr(method, "name", method))
    text = name.strip().lower()
    percentile = None
    if ":" in text:
        text, _, p = text.partition(":")
        try:
            percentile = float(p)
        except ValueError:
            raise RecipeError(f"method: '{name}': expected percentile:NUMBER, e.g. percentile:99.9", key="method") from None
    if text not in ("minmax", "percentile", "entropy", "mse"):
        raise RecipeError(f"method: '{name}' is not a calibration method; expected minmax, percentile, entropy or mse", key="method")
    return text, percentile


def quantize_with_calibration(
    input_path: PathLike,
    output_path: PathLike,
    calibration_data: Any = None,
    bits: int = 8,
    per_channel: Optional[bool] = None,
    method: str = "minmax",
    num_samples: int = 100,
    sample_shape: Optional[Sequence[int]] = None,
    native_int4: bool = False,
    symmetric: Optional[bool] = None,
    excluded_layers: Optional[Iterable[str]] = None,
    min_elements: Optional[int] = None,
    layer_bits: Optional[Mapping[str, int]] = None,
    *,
    force: bool = False,
    **options: Any,
) -> QuantizeResult:
    """Static quantization: weights as :func:`quantize`, and the activations of Conv/MatMul/Gemm
    (and the integer-kernel ops around them) calibrated on ``calibration_data`` and written as
    QuantizeLinear/DequantizeLinear pairs. The original package's call, unchanged.

    Args:
        calibration_data: a path (``.npy``, ``.npz``, ``.safetensors``, a folder of them or of
            images with ``image=``), a numpy array, a dict of input name to array, an iterable of
            such dicts, or a reader with ``get_next()``. In-memory data gives exactly the output
            the same data saved with ``numpy.save``/``numpy.savez`` gives. ``None`` calibrates on
            ``num_samples`` random samples uniform in [0, 1) (as the original package did, with a
            warning: ranges from random data rarely fit real inputs).
        method: ``"minmax"``, ``"percentile"`` (or ``"percentile:99.9"``), ``"entropy"``, ``"mse"``.
        num_samples: random samples when ``calibration_data`` is None.
        sample_shape: shape of one random sample without the batch axis (default: the model's
            input shape after its first axis, which must be fixed).
        samples: (keyword) use at most this many samples of ``calibration_data``.
        Other arguments: as :func:`quantize`; ``**options``: any :class:`Recipe` keyword.

    Returns a :class:`QuantizeResult` (with ``calibration``).
    """
    progress = bool(options.pop("progress", False))
    name, percentile = _method(method)
    if percentile is not None:
        options.setdefault("percentile", percentile)
    if calibration_data is None:
        calibration_data = _random_data(input_path, num_samples, sample_shape)
    options.update(calibration_data=calibration_data, method=name)
    recipe = _original_recipe(
        bits, per_channel, min_elements, layer_bits, native_int4, symmetric, excluded_layers, options
    )
    return _run(input_path, output_path, recipe, force=force, progress=progress)


def _random_data(model: PathLike, count: int, shape: Optional[Sequence[int]]) -> Any:
    if shape is None:
        info = model_info(model)
        if len(info.input_details) != 1:
            raise RecipeError(
                f"calibration_data: the model has {len(info.input_details)} inputs; random samples need one — pass calibration_data",
                key="calibration_data",
            )
        dims = info.input_details[0].shape or []
        if len(dims) < 2 or not all(d.isdigit() for d in dims[1:]):
            raise RecipeError(
                f"sample_shape: the model's input '{info.inputs[0]}' has shape {dims}; pass sample_shape=[...] "
                "(one sample without the batch axis) or calibration_data",
                key="sample_shape",
            )
        shape = [int(d) for d in dims[1:]]
    if int(count) < 1:
        raise RecipeError("num_samples: must be at least 1", key="num_samples")
    warnings.warn(
        "quantize_with_calibration: no calibration_data, calibrating on random samples uniform in [0, 1); "
        "ranges from random data rarely fit real inputs — pass representative samples",
        stacklevel=3,
    )
    return random_samples(tuple(int(d) for d in shape), int(count))


# --- ONNX Runtime's names -----------------------------------------------------------------------

# Op types whose activations the engine calibrates (`calibration.op-types`); the weight op types
# come from the engine's default recipe.
_ACTIVATION_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Sigmoid", "Concat", "MaxPool", "Resize", "Split")


def _enum_name(value: Any) -> str:
    return str(getattr(value, "name", value)).strip()


def quantize_static(
    model_input: PathLike,
    model_output: PathLike,
    calibration_data_reader: Any,
    *,
    quant_format: Any = None,
    op_types_to_quantize: Optional[Iterable[str]] = None,
    per_channel: Optional[bool] = None,
    reduce_range: Optional[bool] = None,
    activation_type: Any = None,
    weight_type: Any = None,
    nodes_to_quantize: Optional[Iterable[str]] = None,
    nodes_to_exclude: Optional[Iterable[str]] = None,
    use_external_data_format: bool = False,
    calibrate_method: Any = None,
    calibration_providers: Any = None,
    extra_options: Optional[Mapping[str, Any]] = None,
    force: bool = False,
    **options: Any,
) -> QuantizeResult:
    """ONNX Runtime's ``quantize_static``, for people moving over: the same names, enums
    (``QuantType``, ``QuantFormat``, ``CalibrationMethod``, by name) or their names as strings.

    ``calibration_data_reader`` is anything with ``get_next()`` returning a dict of input name to
    array, or ``None`` when done (ORT's ``CalibrationDataReader``), or any other form
    :func:`quantize_with_calibration` takes. The reader is drained once, one sample at a time.

    Where this differs from ONNX Runtime:

    - ``quant_format``: QDQ only (``QOperator`` raises :class:`RecipeError`).
    - ``per_channel``: default True (ORT: False); per-channel weights are what we measured best.
    - ``activation_type``: default ``QUInt8`` (ORT: ``QInt8``), asymmetric uint8, what ORT's x86
      kernels fuse; ``QInt8`` gives symmetric int8 activations (zero point 0).
    - ``weight_type``: ``QInt8`` (default), ``QUInt8``, ``QInt4``, ``QUInt4``.
    - ``reduce_range``: by default the weights of integer-kernel ops get 7 bits, which ORT's x86
      kernels without VNNI cannot overflow (ORT's default is 8 bits, which can saturate);
      ``reduce_range=False`` asks for the full 8 bits.
    - ``calibrate_method``: ``MinMax`` (default), ``Entropy``, ``Percentile``, and ``"mse"``;
      ORT's ``Distribution`` raises :class:`RecipeError`.
    - ``op_types_to_quantize``: split into the weight op types and activation op types the engine
      knows; another op raises :class:`RecipeError`.
    - ``nodes_to_quantize`` / ``nodes_to_exclude``: node or tensor names.
    - ``use_external_data_format`` and ``calibration_providers`` are accepted and ignored: external
      data is written when the model passes 2 GiB, and calibration runs in tract.
    - ``extra_options``: ``ActivationSymmetric``, ``WeightSymmetric``, ``CalibPercentile``;
      others raise :class:`RecipeError`.
    - Bias correction, graph rewrites and the other engine defaults apply (see :class:`Recipe`).
      Like ORT, an existing output file is replaced, but never the input model unless
      ``force=True``.

    ``**options``: any :class:`Recipe` keyword (``verify_data``, ``min_snr_db``, ``samples``, ...).
    """
    progress = bool(options.pop("progress", False))
    kw: Dict[str, Any] = {}
    if quant_format is not None and _enum_name(quant_format).lower() != "qdq":
        raise RecipeError(
            f"quant_format: quantize-rs writes QDQ models only, not {_enum_name(quant_format)}", key="quant_format"
        )
    if per_channel is not None:
        kw["per_channel"] = bool(per_channel)
    if reduce_range is not None:
        kw["full_range_weights"] = not reduce_range
    if activation_type is not None:
        a = _enum_name(activation_type).lower().lstrip("q")
        if a == "uint8":
            kw["symmetric_activations"] = False
        elif a == "int8":
            kw["symmetric_activations"] = True
        else:
            raise RecipeError(f"activation_type: expected QUInt8 or QInt8, got {_enum_name(activation_type)}", key="activation_type")
    if weight_type is not None:
        w = _enum_name(weight_type).lower().lstrip("q")
        types = {"int8": (8, False), "uint8": (8, True), "int4": (4, False), "uint4": (4, True)}
        if w not in types:
            raise RecipeError(f"weight_type: expected QInt8, QUInt8, QInt4 or QUInt4, got {_enum_name(weight_type)}", key="weight_type")
        kw["bits"], kw["unsigned"] = types[w]
    if op_types_to_quantize is not None:
        ops = [str(o) for o in op_types_to_quantize]
        weight_ops = Recipe().resolved()["op-types"]
        unknown = [o for o in ops if o not in weight_ops and o not in _ACTIVATION_OPS]
        if unknown:
            raise RecipeError(
                f"op_types_to_quantize: quantize-rs quantizes neither weights nor activations of {unknown}; "
                f"expected some of {sorted(set(weight_ops) | set(_ACTIVATION_OPS))}",
                key="op_types_to_quantize",
            )
        kw["op_types"] = [o for o in ops if o in weight_ops]
        kw["activation_op_types"] = [o for o in ops if o in _ACTIVATION_OPS]
        if not kw["activation_op_types"]:
            del kw["activation_op_types"]
    if nodes_to_quantize is not None:
        kw["include"] = _globs(nodes_to_quantize)
    if nodes_to_exclude is not None:
        kw["exclude"] = _globs(nodes_to_exclude)
    if calibrate_method is not None:
        kw["method"], percentile = _method(calibrate_method)
        if percentile is not None:
            kw["percentile"] = percentile
    for key, value in (extra_options or {}).items():
        if key == "ActivationSymmetric":
            kw["symmetric_activations"] = bool(value)
        elif key == "WeightSymmetric":
            kw["symmetric"] = bool(value)
        elif key == "CalibPercentile":
            kw["percentile"] = float(value)
        else:
            raise RecipeError(
                f"extra_options: '{key}' is not supported; quantize-rs takes ActivationSymmetric, WeightSymmetric, "
                "CalibPercentile (and Recipe keywords as arguments)",
                key="extra_options",
            )
    kw.update(options)
    kw.setdefault("method", "minmax")
    recipe = Recipe(calibration_data=calibration_data_reader, **kw)
    return _run(
        model_input,
        model_output,
        recipe,
        force=force,
        progress=progress,
        data_argument="calibration_data_reader",
        rename={"calibration_data": "calibration_data_reader"},
    )


def quantize_dynamic(
    model_input: PathLike,
    model_output: PathLike,
    op_types_to_quantize: Optional[Sequence[str]] = None,
    per_channel: Optional[bool] = None,
    reduce_range: Optional[bool] = None,
    weight_type: Any = None,
    nodes_to_quantize: Optional[Sequence[str]] = None,
    nodes_to_exclude: Optional[Sequence[str]] = None,
    use_external_data_format: bool = False,
    extra_options: Optional[Mapping[str, Any]] = None,
    *,
    force: bool = False,
    **options: Any,
) -> QuantizeResult:
    """ONNX Runtime's ``quantize_dynamic``, for people moving over: MatMul and Gemm run on int8
    with their inputs quantized at run time (DynamicQuantizeLinear + MatMulInteger, which ORT
    fuses into DynamicQuantizeMatMul); no calibration data.

    Where this differs from ONNX Runtime:

    - ``per_channel``: default True (ORT: False).
    - ``weight_type``: ``QInt8`` only (the integer products take signed weights).
    - ``reduce_range``: the weights get full 8 bits, like ORT's default (``reduce_range=True``
      raises :class:`RecipeError`: 7 bits measured worse on a real transformer).
    - ``op_types_to_quantize``: op types whose weights are quantized; only MatMul and Gemm run
      on integers, the others (Conv, Gather, ...) keep int8 weights behind a DequantizeLinear.
    - ``nodes_to_quantize`` / ``nodes_to_exclude``: node or tensor names.
    - ``use_external_data_format`` is accepted and ignored: external data is written when the
      model passes 2 GiB.
    - ``extra_options``: ``WeightSymmetric`` (weights are symmetric; ``False`` raises).

    ``**options``: any :class:`Recipe` keyword (``verify_data``, ``min_snr_db``, ...).
    """
    progress = bool(options.pop("progress", False))
    kw: Dict[str, Any] = {"dynamic": True}
    if per_channel is not None:
        kw["per_channel"] = bool(per_channel)
    if reduce_range:
        raise RecipeError(
            "reduce_range: dynamic weights get full 8 bits (7 bits measured worse on a real transformer); "
            "leave reduce_range out",
            key="reduce_range",
        )
    if weight_type is not None and _enum_name(weight_type).lower() != "qint8":
        raise RecipeError(f"weight_type: dynamic quantization takes QInt8, got {_enum_name(weight_type)}", key="weight_type")
    if op_types_to_quantize is not None:
        ops = [str(o) for o in op_types_to_quantize]
        weight_ops = Recipe().resolved()["op-types"]
        unknown = [o for o in ops if o not in weight_ops]
        if unknown:
            raise RecipeError(
                f"op_types_to_quantize: quantize-rs quantizes no weight of {unknown}; expected some of {weight_ops}",
                key="op_types_to_quantize",
            )
        kw["op_types"] = ops
    if nodes_to_quantize is not None:
        kw["include"] = _globs(nodes_to_quantize)
    if nodes_to_exclude is not None:
        kw["exclude"] = _globs(nodes_to_exclude)
    for key, value in (extra_options or {}).items():
        if key == "WeightSymmetric" and value:
            continue
        raise RecipeError(
            f"extra_options: '{key}' = {value!r} is not supported for dynamic quantization "
            "(weights are symmetric int8; pass Recipe keywords as arguments)",
            key="extra_options",
        )
    del use_external_data_format
    kw.update(options)
    return _run(model_input, model_output, Recipe(**kw), force=force, progress=progress)


# --- info, validate, benchmark ------------------------------------------------------------------


def model_info(input_path: PathLike) -> ModelInfo:
    """A summary of the model at ``input_path``: ``name`` (the graph's name), ``version`` (IR
    version), ``opset_version``, ``num_nodes``, ``inputs`` and ``outputs`` (names) as in the
    original package, plus everything ``quantize-rs info`` reports (``str(info)`` is its text)."""
    path = _path(input_path)
    out = _call("model_info", {"path": path})
    stem = os.path.splitext(os.path.basename(path))[0]
    return ModelInfo._of(out, stem)


def _shapes(input_shapes: Optional[Mapping[str, Sequence[int]]]) -> Optional[Dict[str, List[int]]]:
    if input_shapes is None:
        return None
    return {str(k): [int(d) for d in v] for k, v in input_shapes.items()}


def validate(
    original: PathLike,
    quantized: PathLike,
    *,
    data: Any = None,
    samples: Optional[int] = None,
    detailed: bool = False,
    min_snr_db: Optional[float] = None,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    image: Optional[Union[ImagePreprocess, Mapping[str, Any]]] = None,
) -> Validation:
    """Checks ``quantized`` against ``original``: structure, connectivity, opset, Q/DQ types,
    the same interface, and that it runs in tract (on ``data`` — any form
    :func:`quantize_with_calibration` takes — or on inputs synthesized from the declared shapes,
    symbolic sizes as 1 unless ``input_shapes`` says), with its outputs compared to the original's.
    ``detailed=True`` also compares every dequantized weight with the float one. ``min_snr_db``
    (needs ``data``) fails the ``min-snr-db`` check when the worst float output is below that SNR or an integer
    output differs.

    Problems with the models are in the returned :class:`Validation` (``passed`` is False); an
    exception is raised only for a problem with the request (unreadable files or data).
    """
    request: Dict[str, Any] = {
        "original": _path(original),
        "quantized": _path(quantized),
        "samples": samples,
        "detailed": bool(detailed),
        "min_snr_db": min_snr_db,
        "input_shapes": _shapes(input_shapes) or {},
    }
    if image is not None:
        request["image"] = image._engine() if isinstance(image, ImagePreprocess) else dict(image)
    with materialize() as m:
        request["data"] = m.path(data, "data")
        out = _call("validate", request, data_names=m.names)
    return Validation._of(out)


def benchmark(
    original: PathLike,
    quantized: PathLike,
    *,
    data: Any = None,
    runs: int = 20,
    warmup: int = 3,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
) -> Benchmark:
    """File and weight sizes, node counts and tract latency (median of ``runs`` after ``warmup``)
    of ``original`` and ``quantized``, on the first sample of ``data`` or on synthesized inputs.
    Weight-only models run at float speed in tract (it folds constant DequantizeLinear at load)."""
    request: Dict[str, Any] = {
        "original": _path(original),
        "quantized": _path(quantized),
        "runs": int(runs),
        "warmup": int(warmup),
        "input_shapes": _shapes(input_shapes) or {},
    }
    with materialize() as m:
        request["data"] = m.path(data, "data")
        out = _call("benchmark", request, data_names=m.names)
    return Benchmark._of(out)
