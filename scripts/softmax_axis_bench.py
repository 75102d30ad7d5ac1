#!/usr/bin/env python3
"""softmax_axis_bench.py: ONNX Runtime (1 thread) time of a Softmax over a non-last axis against
the ReduceMax/Sub/Exp/ReduceSum/Div form quantize-rs writes before calibrating (src/fold.rs,
`decompose_softmax`), on YOLOv8's DFL tensor shape, with the largest difference between them.

    "$(scripts/setup-python.sh)" scripts/softmax_axis_bench.py [--shape 1,16,4,8400] [--axis 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="1,16,4,8400")
    p.add_argument("--axis", type=int, default=1)
    p.add_argument("--runs", type=int, default=50)
    args = p.parse_args()
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    shape = [int(d) for d in args.shape.split(",")]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 3
    axes = numpy_helper.from_array(np.array([args.axis], np.int64), "axes")
    forms = {
        "Softmax": [helper.make_node("Softmax", ["x"], ["y"], axis=args.axis)],
        "ReduceMax/Sub/Exp/ReduceSum/Div": [
            helper.make_node("ReduceMax", ["x"], ["m"], axes=[args.axis], keepdims=1),
            helper.make_node("Sub", ["x", "m"], ["d"]),
            helper.make_node("Exp", ["d"], ["e"]),
            helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=1),
            helper.make_node("Div", ["e", "s"], ["y"]),
        ],
    }
    print(f"onnxruntime {ort.__version__}, 1 thread, shape {shape}, axis {args.axis}, median of {args.runs}")
    outputs = []
    for name, nodes in forms.items():
        g = helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [axes])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        for _ in range(5):
            s.run(None, {"x": x})
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            y = s.run(None, {"x": x})[0]
            times.append(time.perf_counter() - t)
        outputs.append(y)
        print(f"  {name:32s} {np.median(times) * 1000:7.3f} ms")
    print(f"  max abs difference {float(np.abs(outputs[0] - outputs[1]).max()):.2e}")


if __name__ == "__main__":
    main()
