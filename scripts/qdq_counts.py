#!/usr/bin/env python3
"""qdq_counts.py: how quantized a model is, in its file and in ONNX Runtime's optimized graph.

    python scripts/qdq_counts.py MODEL.onnx [MODEL.onnx ...]

For each model prints one JSON line with:
 - file: QuantizeLinear / DequantizeLinear nodes and integer (int8/uint8/int4/uint4) initializers
   and Constant-node tensors in the saved model, subgraphs included;
 - ort: the op counts of the graph ONNX Runtime actually runs, written out with
   `SessionOptions.optimized_model_filepath` at ORT_ENABLE_EXTENDED (where its QDQ fusions run;
   ENABLE_ALL would add CPU-specific NCHWc layout ops that are not about quantization), 1 thread:
   `int_kernels` counts the integer kernels it fused (QLinearConv, QLinearMatMul, ConvInteger,
   MatMulInteger, QGemm, QLinearAdd, ..., MatMulNBits), `by_op` all quantization-related ops.

static_compare.py and real_models.py gate these counts (scripts/floors.py) so that a model that
is "quantized less" (activations left float, a weight skipped) fails even when its SNR rises.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Dict

# Integer kernels ONNX Runtime fuses Q/DQ patterns into (default and com.microsoft domains).
INT_KERNELS = {
    "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu",
    "QLinearConcat", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearSoftmax", "QLinearReduceMean",
    "QLinearWhere", "QAttention", "QEmbedLayerNormalization", "MatMulNBits", "QLinearConvTranspose",
}
# Integer element types: INT8, UINT8, INT4, UINT4 (TensorProto.DataType).
INT_TYPES = {2, 3, 21, 22}


def _walk_nodes(graph):
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.HasField("g"):
                yield from _walk_nodes(a.g)
            for g in a.graphs:
                yield from _walk_nodes(g)


def _walk_inits(graph):
    yield from graph.initializer
    for n in graph.node:
        for a in n.attribute:
            if n.op_type == "Constant" and a.name == "value":
                yield a.t
            if a.HasField("g"):
                yield from _walk_inits(a.g)
            for g in a.graphs:
                yield from _walk_inits(g)


def file_counts(path: Path) -> Dict[str, int]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    ops = Counter(n.op_type for n in _walk_nodes(m.graph))
    int_tensors = sum(1 for t in _walk_inits(m.graph) if t.data_type in INT_TYPES)
    return {"q": ops.get("QuantizeLinear", 0), "dq": ops.get("DequantizeLinear", 0), "int_tensors": int_tensors}


def ort_counts(path: Path) -> Dict[str, object]:
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opt_path = Path(tmp) / "optimized.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(opt_path)
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 4
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        m = onnx.load(str(opt_path), load_external_data=False)
    ops = Counter(n.op_type for n in _walk_nodes(m.graph))
    by_op = {k: v for k, v in sorted(ops.items())
             if k in INT_KERNELS or k in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")}
    return {"int_kernels": sum(v for k, v in ops.items() if k in INT_KERNELS), "nodes": sum(ops.values()),
            "by_op": by_op}


def counts(path: Path) -> Dict[str, object]:
    """{"q", "dq", "int_tensors", "ort_int_kernels", "ort_q", "ort_dq", "ort_by_op"}."""
    f = file_counts(path)
    o = ort_counts(path)
    return {**f, "ort_int_kernels": o["int_kernels"], "ort_q": o["by_op"].get("QuantizeLinear", 0),
            "ort_dq": o["by_op"].get("DequantizeLinear", 0), "ort_by_op": o["by_op"]}


def main() -> int:
    for p in sys.argv[1:]:
        print(json.dumps({"model": p, **counts(Path(p))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
