#!/usr/bin/env python3
"""ort_peer_quantize.py: quantize a model with onnxruntime's own Python quantizer.

The reference ("peer") row in real_models.py and bench_quantize.py. It is run as
a separate process so that its wall time and peak RSS are measured the same way
as the quantize-rs binary's (see proc_measure.py).

    python scripts/ort_peer_quantize.py IN.onnx OUT.onnx [--per-tensor]

Runs onnxruntime.quantization.quantize_dynamic(IN, OUT, per_channel=True,
weight_type=QuantType.QInt8) (per_channel=False with --per-tensor) and nothing
else, so the measurement is of the quantizer alone (Python + onnxruntime import
included). Prints one JSON line, {"ok": true} or {"ok": false, "error": "..."}
(exit 1).

lift_constants() (used by real_models.py, outside the measurement) rewrites
top-level `Constant` nodes into graph initializers. Models exported by
paddle2onnx (the PP-OCR ones) keep every weight in a Constant node, which ORT's
quantizer does not treat as a weight: it fails on Conv with "Expected ... to be
an initializer", or leaves the weights as they are. Lifting them is the
pre-processing a user of ORT's quantizer would have to do.
"""

from __future__ import annotations

import argparse
import json
import sys


def lift_constants(src: str, dst: str) -> int:
    """Write src to dst with top-level Constant(value=tensor) nodes turned into
    initializers. Returns how many were lifted."""
    import onnx

    model = onnx.load(src)
    graph = model.graph
    kept = []
    lifted = 0
    for node in graph.node:
        is_tensor_constant = (
            node.op_type == "Constant"
            and node.domain in ("", "ai.onnx")
            and len(node.attribute) == 1
            and node.attribute[0].name == "value"
        )
        if is_tensor_constant:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            lifted += 1
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    onnx.save(model, dst)
    return lifted


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--per-tensor", action="store_true", help="per_channel=False")
    args = p.parse_args()
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(args.src, args.dst, per_channel=not args.per_tensor, weight_type=QuantType.QInt8)
    except Exception as e:  # noqa: BLE001 - any failure is reported as data
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        return 1
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
