#!/usr/bin/env python3
"""latency_interleaved.py: ORT latency of the float, quantize-rs and ONNX Runtime static models,
measured in alternating rounds so that a shared machine's drift hits all three alike.

    PY="$(scripts/setup-python.sh)"
    "$PY" scripts/static_compare.py ...          # writes the models and inputs used here
    "$PY" scripts/latency_interleaved.py [--models det,rec,cls,yolo] [--method minmax] [--rounds 7]

For each model: OUT_DIR/models/<m>.onnx (float), OUT_DIR/static/<m>.<method>.ours.onnx and
OUT_DIR/static/<m>.<method>.ort.onnx, run by ONNX Runtime with one thread on the held-out inputs
OUT_DIR/inputs/<m>/eval/*.npy. After a warm-up pass each, `--rounds` rounds run one pass over the
inputs with each model in turn; prints the median per-input latency and the speedup over float.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="det,rec,cls,yolo")
    p.add_argument("--method", default="minmax")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out-dir", default=str(root / "target/real-models"))
    args = p.parse_args()
    import onnxruntime as ort

    out = Path(args.out_dir)
    print("| model | float ms | quantize-rs ms (speedup) | ORT ms (speedup) |")
    print("|---|---:|---:|---:|")
    for m in args.models.split(","):
        paths = {
            "float": out / "models" / f"{m}.onnx",
            "ours": out / "static" / f"{m}.{args.method}.ours.onnx",
            "ort": out / "static" / f"{m}.{args.method}.ort.onnx",
        }
        missing = [str(v) for v in paths.values() if not v.is_file()]
        if missing:
            print(f"{m}: missing {', '.join(missing)}; run scripts/static_compare.py first", file=sys.stderr)
            return 2
        feeds = [np.load(f) for f in sorted((out / "inputs" / m / "eval").glob("*.npy"))]
        sessions = {}
        for k, path in paths.items():
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            so.log_severity_level = 4
            sessions[k] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        name = sessions["float"].get_inputs()[0].name
        for s in sessions.values():
            for f in feeds:
                s.run(None, {name: f})
        times = {k: [] for k in paths}
        for _ in range(args.rounds):
            for k, s in sessions.items():
                t0 = time.perf_counter()
                for f in feeds:
                    s.run(None, {name: f})
                times[k].append((time.perf_counter() - t0) * 1000.0 / len(feeds))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"| {m} | {med['float']:.2f} | {med['ours']:.2f} ({med['float'] / med['ours']:.2f}x) "
              f"| {med['ort']:.2f} ({med['float'] / med['ort']:.2f}x) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
