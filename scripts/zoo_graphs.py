#!/usr/bin/env python3
"""zoo_graphs.py: the ONNX model zoo's classic CNN graphs (IR 3, opset 9), quantized by
quantize-rs with every recipe and checked in ONNX Runtime.

    PY="$(scripts/setup-python.sh)"
    "$PY" scripts/zoo_graphs.py [--bin target/release/quantize-rs] [--out-dir target/zoo-graphs]
        [--json OUT] [--no-gate]

The graphs: the `light_*.onnx` files that the `onnx` wheel ships with its backend tests
(onnx/backend/test/data/light): AlexNet, DenseNet-121, Inception v1 and v2, ResNet-50,
ShuffleNet, SqueezeNet 1.0, VGG-19 and ZFNet-512 exactly as the model zoo's old exports wire
them (IR version 3: every initializer is listed among the graph inputs too; Sum, LRN, Dropout,
Concat, BatchNormalization with its parameters as inputs), but with each weight replaced by a
ConstantOfShape. Nothing is downloaded: the script puts seeded random weights back in their place
(He-scaled convolution and Gemm weights, batch norms near identity, the rest small), so the
figures measure how the graphs are handled, not a trained model's accuracy. With random weights
the logits are large and a final Softmax one-hot, so its input is made an output too.

Configurations: `int8` (quantize, the default recipe), `int4` (--bits 4 --block-size 32
--native-int4: opset 9 -> 21), `dynamic` (--dynamic), `static` (calibrate on 8 random samples).
Each output must load and run in ONNX Runtime (1 thread) on 4 held-out random inputs with finite
outputs; the figure is the output's SNR against the float model there. Gate (unless --no-gate):
every configuration of every graph runs, and int8, dynamic and static are at least 15 dB.
Exit status: 0 when all passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CONFIGS = {
    "int8": ["quantize"],
    "int4": ["quantize", "--bits", "4", "--block-size", "32", "--native-int4"],
    "dynamic": ["quantize", "--dynamic"],
    "static": ["calibrate", "--data", "{calib}"],
}
# Random weights in 8-bit: far above this unless a graph was mishandled.
FLOOR_DB = {"int8": 15.0, "dynamic": 15.0, "static": 15.0}


def materialize(path: Path, rng: np.random.Generator):
    """The graph with each ConstantOfShape weight replaced by a seeded random initializer."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    readers = {}
    for n in g.node:
        for i, x in enumerate(n.input):
            readers.setdefault(x, []).append((n.op_type, i))
    kept, made = [], []
    for n in g.node:
        if n.op_type != "ConstantOfShape" or n.input[0] not in inits:
            kept.append(n)
            continue
        shape = [int(v) for v in inits[n.input[0]]]
        op, idx = (readers.get(n.output[0]) or [("", 0)])[0]
        if op in ("Conv", "Gemm", "MatMul") and idx == 1:
            fan_in = int(np.prod(shape[1:])) if op == "Conv" else shape[-1] if op == "Gemm" else shape[0]
            v = rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))
        elif op == "BatchNormalization":
            v = {1: 1.0 + 0.1 * rng.standard_normal(shape), 2: 0.1 * rng.standard_normal(shape),
                 3: 0.1 * rng.standard_normal(shape), 4: 1.0 + 0.1 * rng.random(shape)}.get(idx, np.zeros(shape))
        else:
            v = 0.01 * rng.standard_normal(shape)
        made.append(numpy_helper.from_array(v.astype(np.float32), n.output[0]))
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(made)
    # Random weights make the logits large, so a final Softmax is one-hot and hides any error:
    # its input becomes an output too.
    produced = {o: n for n in g.node for o in n.output}
    for out in list(g.output):
        n = produced.get(out.name)
        if n is not None and n.op_type == "Softmax":
            g.output.append(onnx.helper.make_tensor_value_info(n.input[0], onnx.TensorProto.FLOAT, None))
    return m


def data_input(model):
    """The one graph input that is not an initializer: name and static shape."""
    inits = {t.name for t in model.graph.initializer}
    (inp,) = [i for i in model.graph.input if i.name not in inits]
    return inp.name, [d.dim_value for d in inp.type.tensor_type.shape.dim]


def run_ort(path: Path, xs):
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name, _ = data_input(onnx.load(str(path), load_external_data=False))
    return [s.run(None, {name: x}) for x in xs]


def snr_db(ref, got) -> float:
    worst = float("inf")
    for k in range(len(ref[0])):
        a = np.concatenate([r[k].ravel() for r in ref]).astype(np.float64)
        b = np.concatenate([o[k].ravel() for o in got]).astype(np.float64)
        noise = ((a - b) ** 2).sum()
        worst = min(worst, float("inf") if noise == 0 else 10 * np.log10((a * a).sum() / noise))
    return worst


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", default=str(root / "target/release/quantize-rs"))
    p.add_argument("--out-dir", default=str(root / "target/zoo-graphs"))
    p.add_argument("--json", default=None)
    p.add_argument("--no-gate", action="store_true")
    args = p.parse_args()
    import onnx

    light = Path(onnx.__file__).parent / "backend/test/data/light"
    files = sorted(light.glob("light_*.onnx"))
    if not files:
        print(f"no light_*.onnx in {light}: the onnx wheel no longer ships them", file=sys.stderr)
        return 1
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows, problems = [], []
    start = time.time()
    for f in files:
        name = f.stem[len("light_"):]
        m = materialize(f, rng)
        src = out / f"{name}.onnx"
        onnx.save(m, str(src))
        _, shape = data_input(m)
        calib = out / f"{name}.calib.npy"
        np.save(calib, rng.standard_normal([8] + shape[1:]).astype(np.float32))
        xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]
        ref = run_ort(src, xs)
        for config, argv in CONFIGS.items():
            dst = out / f"{name}.{config}.onnx"
            cmd = [args.bin, argv[0], str(src), "-o", str(dst), "--force",
                   *[a.replace("{calib}", str(calib)) for a in argv[1:]]]
            r = subprocess.run(cmd, capture_output=True, text=True)
            row = {"model": name, "config": config, "snr_db": None, "size_ratio": None, "error": None}
            if r.returncode != 0:
                row["error"] = f"exit {r.returncode}: {r.stderr.strip()[-300:]}"
            else:
                try:
                    got = run_ort(dst, xs)
                    if not all(np.isfinite(o).all() for outs in got for o in outs):
                        row["error"] = "non-finite outputs in ONNX Runtime"
                    row["snr_db"] = snr_db(ref, got)
                    row["size_ratio"] = dst.stat().st_size / src.stat().st_size
                except Exception as e:  # noqa: BLE001 (ORT's own message is the report)
                    row["error"] = f"ONNX Runtime: {str(e)[:300]}"
            floor = FLOOR_DB.get(config)
            if row["error"]:
                problems.append(f"{name} {config}: {row['error']}")
            elif floor is not None and row["snr_db"] < floor:
                problems.append(f"{name} {config}: {row['snr_db']:.2f} dB < {floor} dB")
            rows.append(row)
    print("| graph | config | SNR dB | size ratio | notes |\n|---|---|---:|---:|---|")
    for r in rows:
        snr = "-" if r["snr_db"] is None else f"{r['snr_db']:.2f}"
        size = "-" if r["size_ratio"] is None else f"{r['size_ratio']:.3f}"
        print(f"| {r['model']} | {r['config']} | {snr} | {size} | {r['error'] or ''} |")
    print(f"\nRandom weights (seed 0), 4 held-out random inputs, ORT 1 thread. Elapsed {time.time() - start:.0f} s.")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if problems and not args.no_gate:
        print("Gates failed:\n  " + "\n  ".join(problems))
        return 1
    print("Gates: all passed" if not args.no_gate else "Gates: not checked (--no-gate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
