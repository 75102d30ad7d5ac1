"""What the functions return: plain, typed, read-only records built from the engine's reports."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

__all__ = [
    "Verification",
    "Report",
    "CalibrationReport",
    "QuantizeResult",
    "Port",
    "ModelInfo",
    "Check",
    "OutputComparison",
    "WeightComparison",
    "Validation",
    "Benchmark",
]

T = TypeVar("T")


def _float(x: Any) -> float:
    """The engine writes non-finite figures as "inf", "-inf", "nan" (JSON has none)."""
    if x is None:
        return float("nan")
    return float(x)


def _record(cls: Type[T], data: Mapping[str, Any], **converted: Any) -> T:
    """``cls`` from the keys of ``data`` it declares (keys the engine adds later are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in data.items() if k in names}
    values.update(converted)
    return cls(**values)


@dataclass(frozen=True)
class OutputComparison:
    """One output of the quantized model against the original's. ``kind`` is ``"float"``
    (figures: SNR, cosine, max abs error) or ``"integer"`` for integer and bool outputs, which
    must match exactly (``mismatches`` counts the values that differ)."""

    name: str
    kind: str
    snr_db: float
    cosine: float
    max_abs: float
    mismatches: int = 0
    values: int = 0

    @classmethod
    def _of(cls, o: Mapping[str, Any]) -> "OutputComparison":
        return cls(o["name"], o["kind"], _float(o["snr_db"]), _float(o["cosine"]), _float(o["max_abs"]),
                   int(o.get("mismatches", 0)), int(o.get("values", 0)))


@dataclass(frozen=True)
class Verification:
    """Output quality of the quantized model on held-out data, measured with tract against the
    float model. ``snr_db`` is the worst float output's (what gates and the accuracy target
    use); integer and bool outputs must be bit-exact (``exact``); ``outputs`` has every
    output's figures."""

    samples: int
    """Samples compared."""
    snr_db: float
    """SNR of the worst float output in dB (``inf`` when identical)."""
    cosine: float
    """Cosine similarity of the least similar float output."""
    max_abs: float
    """Largest absolute difference of any float output value."""
    exact: bool = True
    """Every integer and bool output matches exactly."""
    outputs: List[OutputComparison] = field(default_factory=list)
    """Each output's figures, in the model's output order."""

    @classmethod
    def _of(cls, d: Mapping[str, Any]) -> "Verification":
        return cls(int(d["samples"]), _float(d["snr_db"]), _float(d["cosine"]), _float(d["max_abs"]),
                   bool(d.get("exact", True)), [OutputComparison._of(o) for o in d.get("outputs", [])])


@dataclass(frozen=True)
class Report:
    """What was quantized and how (the engine's ``Report``). ``quantized`` and ``skipped`` hold
    one dict per tensor: ``name``, ``op_types``, ``dims``, ``stored_as``, ``bytes_before``,
    ``bytes_after``, ``sqnr_db`` (``inf`` when exact), ``note``, ``spec``; and ``name``,
    ``elements``, ``reason``, ``is_weight``."""

    quantized: List[Dict[str, Any]] = field(default_factory=list)
    skipped: List[Dict[str, Any]] = field(default_factory=list)
    already_quantized: List[Tuple[str, str]] = field(default_factory=list)
    opset_before: int = 0
    opset_after: int = 0
    upgraded_ops: Dict[str, int] = field(default_factory=dict)
    ir_version: int = 0
    weight_bytes_before: int = 0
    weight_bytes_after: int = 0
    folded_nodes: int = 0
    fused_hard_swish: int = 0
    decomposed_softmax: int = 0
    #: Dynamic quantization: ``integer_nodes`` (MatMul/Gemm on integers), ``input_quantizers``
    #: (DynamicQuantizeLinear nodes) and ``left`` ((node, why) kept on DequantizeLinear).
    dynamic: Optional[Dict[str, Any]] = None
    data_aware: Optional[Dict[str, Any]] = None
    #: The weight-only accuracy target (``target_snr_db`` with ``weight_only``): ``target_db``,
    #: ``recipe_db``, ``reached_db``, ``weights_to_8_bits``, ``weights_returned_to_float``,
    #: ``trials`` ([8-bit count, float count, dB]), ``effective_samples``.
    target: Optional[Dict[str, Any]] = None
    #: ``exclude``/``include``/``layer_bits`` patterns that matched no weight (``"exclude 'x'"``).
    unmatched_rules: List[str] = field(default_factory=list)

    @classmethod
    def _of(cls, d: Mapping[str, Any]) -> "Report":
        quantized = []
        for q in d.get("quantized", []):
            q = dict(q)
            # `null` in JSON: the weight is represented exactly.
            q["sqnr_db"] = float("inf") if q.get("sqnr_db") is None else _float(q["sqnr_db"])
            quantized.append(q)
        return _record(
            cls,
            d,
            quantized=quantized,
            already_quantized=[tuple(x) for x in d.get("already_quantized", [])],
        )


@dataclass(frozen=True)
class CalibrationReport:
    """What static calibration did (the engine's ``CalibrationReport``): ``activations`` holds one
    dict per quantized activation (name, range, scale, zero point), ``target`` the
    accuracy-target search when ``target_snr_db`` was given."""

    method: str = "minmax"
    samples: int = 0
    activation_type: str = "uint8"
    activations: List[Dict[str, Any]] = field(default_factory=list)
    quantized_nodes: int = 0
    int32_biases: int = 0
    bias_corrected: int = 0
    reduced_range_weights: List[Tuple[str, float]] = field(default_factory=list)
    skipped_nodes: List[Tuple[str, str]] = field(default_factory=list)
    run_seconds: float = 0.0
    target: Optional[Dict[str, Any]] = None

    @classmethod
    def _of(cls, d: Mapping[str, Any]) -> "CalibrationReport":
        return _record(
            cls,
            d,
            reduced_range_weights=[(n, _float(s)) for n, s in d.get("reduced_range_weights", [])],
            skipped_nodes=[tuple(x) for x in d.get("skipped_nodes", [])],
        )


@dataclass(frozen=True)
class QuantizeResult:
    """The outcome of a quantization job: where it wrote, the sizes, the report, and the
    calibration and verification figures when there were any."""

    input: str
    """The float model."""
    output: str
    """The quantized model written."""
    bytes_in: int
    """Encoded size of the input model."""
    bytes_out: int
    """Encoded size of the output model."""
    seconds: float
    """Wall time of the job (load, quantize, calibrate, verify, save)."""
    recipe: Dict[str, Any]
    """The recipe that ran, every default filled in (the engine's kebab-case keys)."""
    report: Report
    """What was quantized and how."""
    calibration: Optional[CalibrationReport] = None
    """Static quantization: what calibration did."""
    verification: Optional[Verification] = None
    """Quality on ``verify_data``, when given."""

    @property
    def size_ratio(self) -> float:
        """Output size / input size."""
        return self.bytes_out / max(self.bytes_in, 1)

    @classmethod
    def _of(cls, d: Mapping[str, Any]) -> "QuantizeResult":
        return cls(
            input=d["input"],
            output=d["output"],
            bytes_in=int(d["bytes_in"]),
            bytes_out=int(d["bytes_out"]),
            seconds=float(d["seconds"]),
            recipe=d["recipe"],
            report=Report._of(d["report"]),
            calibration=CalibrationReport._of(d["calibration"]) if d.get("calibration") else None,
            verification=Verification._of(d["verification"]) if d.get("verification") else None,
        )


@dataclass(frozen=True)
class Port:
    """A graph input or output."""

    name: str
    elem_type: str
    """Element type, e.g. ``float32``."""
    shape: Optional[List[str]]
    """Dimensions as strings: numbers, symbolic names, or ``?``; ``None`` when not declared."""


@dataclass(frozen=True)
class ModelInfo:
    """A summary of a model: the original package's fields (``name``, ``version``,
    ``opset_version``, ``num_nodes``, ``inputs``, ``outputs``) plus what ``quantize-rs info``
    reports. ``str(info)`` is that command's text."""

    name: str
    """The main graph's name (the file name without its extension when the graph has none)."""
    version: int
    """The ONNX IR version."""
    opset_version: int
    """The default-domain (``ai.onnx``) opset version (0 when the model imports none)."""
    num_nodes: int
    """Nodes in all graphs (subgraphs included)."""
    inputs: List[str]
    """Graph input names (initializers excluded)."""
    outputs: List[str]
    """Graph output names."""
    ir_version: int
    opsets: List[Tuple[str, int]]
    """Every opset import as (domain, version); ``ai.onnx`` for the default domain."""
    producer: str
    input_details: List[Port]
    output_details: List[Port]
    subgraphs: int
    ops: Dict[str, int]
    """Nodes per op type."""
    weight_bytes_by_type: Dict[str, int]
    weight_bytes_by_location: Dict[str, int]
    quantized_ops: Dict[str, int]
    """Already-quantized nodes by op type."""
    quantized_weights: int
    """Constants read by DequantizeLinear (weights already stored quantized)."""
    model_version: Optional[int] = None
    """The model's own version number, when it sets one."""
    text: str = field(repr=False, default="")

    def __str__(self) -> str:
        return self.text

    @classmethod
    def _of(cls, d: Mapping[str, Any], name: str) -> "ModelInfo":
        ports_in = [Port(p["name"], p["elem_type"], p.get("shape")) for p in d["inputs"]]
        ports_out = [Port(p["name"], p["elem_type"], p.get("shape")) for p in d["outputs"]]
        return cls(
            name=d.get("graph_name") or name,
            version=int(d["ir_version"]),
            opset_version=int(d.get("opset") or 0),
            num_nodes=int(d["nodes"]),
            inputs=[p.name for p in ports_in],
            outputs=[p.name for p in ports_out],
            ir_version=int(d["ir_version"]),
            opsets=[(str(a), int(b)) for a, b in d["opsets"]],
            producer=d["producer"],
            input_details=ports_in,
            output_details=ports_out,
            subgraphs=int(d["subgraphs"]),
            ops=dict(d["ops"]),
            weight_bytes_by_type=dict(d["weight_bytes_by_type"]),
            weight_bytes_by_location=dict(d["weight_bytes_by_location"]),
            quantized_ops=dict(d["quantized_ops"]),
            quantized_weights=int(d["quantized_weights"]),
            model_version=d.get("model_version"),
            text=d.get("text", ""),
        )


@dataclass(frozen=True)
class Check:
    """One check of :func:`validate` and every problem it found."""

    name: str
    """``structure``, ``connectivity``, ``opset``, ``types``, ``interface``, ``runs`` or ``min-snr-db``."""
    status: str
    """``passed``, ``failed`` or ``skipped``."""
    problems: List[str]
    note: Optional[str] = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class WeightComparison:
    """One dequantized weight against the float weight (``validate(..., detailed=True)``)."""

    name: str
    stored_as: str
    granularity: str
    elements: int
    snr_db: float
    max_abs: float


@dataclass(frozen=True)
class Validation:
    """Everything :func:`validate` found. ``passed`` is true only when every check passed and the
    quantized model ran."""

    passed: bool
    checks: List[Check]
    inputs: Optional[str]
    """What the models ran on: the data, or ``synthetic``."""
    samples: int
    verification: Optional[Verification]
    """The outputs compared, when both models ran (``snr_db``: the worst float output's)."""
    weights: List[WeightComparison]

    @property
    def outputs(self) -> List[OutputComparison]:
        """Each output's figures (empty when the models did not both run)."""
        return self.verification.outputs if self.verification else []

    def check(self, name: str) -> Check:
        """The check called ``name``."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    @classmethod
    def _of(cls, d: Mapping[str, Any]) -> "Validation":
        return cls(
            passed=bool(d["passed"]),
            checks=[Check(c["name"], c["status"], list(c["problems"]), c.get("note")) for c in d["checks"]],
            inputs=d.get("inputs"),
            samples=int(d["samples"]),
            verification=Verification._of(d["verification"]) if d.get("verification") else None,
            weights=[
                WeightComparison(
                    w["name"], w["stored_as"], w["granularity"], int(w["elements"]), _float(w["snr_db"]), _float(w["max_abs"])
                )
                for w in d["weights"]
            ],
        )


@dataclass(frozen=True)
class Benchmark:
    """Sizes and tract latency of the original and the quantized model (:func:`benchmark`).
    ``original`` / ``quantized`` hold ``path``, ``file_bytes``, ``nodes``, ``initializers``,
    ``weight_bytes``, ``opset`` and ``latency`` (``median_ms``, ``p10_ms``, ``p90_ms``, ...)."""

    original: Dict[str, Any]
    quantized: Dict[str, Any]
    compression_ratio: float
    weight_compression_ratio: float
    speedup: float
    """Original median latency / quantized median latency (above 1: the quantized model is faster)."""
    inputs: str
    input_shapes: List[List[int]]
    note: Optional[str] = None

    @classmethod
    def _of(cls, d: Mapping[str, Any]) -> "Benchmark":
        return cls(
            original=d["original"],
            quantized=d["quantized"],
            compression_ratio=_float(d["compression_ratio"]),
            weight_compression_ratio=_float(d["weight_compression_ratio"]),
            speedup=_float(d["speedup"]),
            inputs=d["inputs"],
            input_shapes=d["input_shapes"],
            note=d.get("note"),
        )
