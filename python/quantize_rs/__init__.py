"""quantize_rs: post-training quantization of float32 ONNX models into standard ONNX QDQ models
(QuantizeLinear / DequantizeLinear) that ONNX Runtime and tract load, by the quantize-rs engine
(Rust). Install with ``pip install quantization-rs`` (from a checkout: ``pip install ./python``).

Quick start::

    import quantize_rs

    # Weight-only int8, per channel.
    quantize_rs.quantize("model.onnx", "model.int8.onnx", bits=8)

    # Static quantization calibrated on samples (a path, an array, a dict of arrays, an iterable
    # of dicts, or ONNX Runtime's CalibrationDataReader).
    result = quantize_rs.quantize_with_calibration(
        "model.onnx", "model.qdq.onnx", calibration_data="samples.npy", method="minmax",
        verify_data="held_out.npy", min_snr_db=20,
    )
    print(result.verification.snr_db, result.size_ratio)

    # ONNX Runtime's call.
    quantize_rs.quantize_static("model.onnx", "model.qdq.onnx", reader)

    info = quantize_rs.model_info("model.onnx")
    checks = quantize_rs.validate("model.onnx", "model.qdq.onnx", data="held_out.npy")

Every error is a :class:`QuantizeError` (see :mod:`quantize_rs.exceptions`). The GIL is released
while the engine works.
"""

from . import _quantize_rs
from ._api import (
    ImagePreprocess,
    Recipe,
    benchmark,
    model_info,
    quantize,
    quantize_dynamic,
    quantize_static,
    quantize_with_calibration,
    run,
    validate,
)
from ._results import (
    Benchmark,
    CalibrationReport,
    Check,
    ModelInfo,
    OutputComparison,
    Port,
    QuantizeResult,
    Report,
    Validation,
    Verification,
    WeightComparison,
)
from . import exceptions
from .exceptions import (
    DataError,
    FileError,
    InferenceError,
    ModelError,
    NothingQuantizedError,
    QualityGateError,
    QuantizeError,
    RecipeError,
)

__version__: str = _quantize_rs.__version__
"""The package version (the engine's crate version)."""
ENGINE_ID: str = _quantize_rs.ENGINE_ID
"""The engine's version and a fingerprint of its sources."""

__all__ = [
    "__version__",
    "ENGINE_ID",
    "quantize",
    "quantize_with_calibration",
    "quantize_static",
    "quantize_dynamic",
    "run",
    "model_info",
    "validate",
    "benchmark",
    "Recipe",
    "ImagePreprocess",
    "QuantizeResult",
    "Report",
    "CalibrationReport",
    "Verification",
    "ModelInfo",
    "Port",
    "Validation",
    "Check",
    "OutputComparison",
    "WeightComparison",
    "Benchmark",
    *exceptions.__all__,
]
