#!/usr/bin/env python3
"""Trains the digits example's model and writes what the example commits.

The data is the handwritten digits set (8x8 images, 1797 samples, 10 classes) that ships inside
scikit-learn's wheel as sklearn/datasets/data/digits.csv.gz. Only numpy and onnx are needed; the
wheel is only unpacked, never installed:

    pip download --no-deps scikit-learn -d /tmp/skl
    .venv/bin/python examples/digits/scripts/train.py --wheel /tmp/skl/scikit_learn-*.whl

or, with the CSV already extracted, `--csv digits.csv.gz`.

Writes into examples/digits/models/:
  digits.onnx               float32 MLP 64 -> 128 -> 64 -> 10 (Gemm + Relu), input `pixels: [batch, 64]`
                            (pixel / 16, i.e. in [0, 1]), output `logits: [batch, 10]`
  digits-calib.npy          float32 [200, 64]  calibration split (for static quantization)
  digits-test.npy           float32 [400, 64]  held-out test split
  digits-test-labels.npy    int64   [400]      its labels
The rest (1197 samples) trains the model. Everything is seeded: rerunning writes the same files.
"""

import argparse
import gzip
import io
import pathlib
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 20261127
HIDDEN = (128, 64)
N_CALIB, N_TEST = 200, 400


def load_csv(args):
    if args.csv:
        raw = pathlib.Path(args.csv).read_bytes()
    else:
        with zipfile.ZipFile(args.wheel) as z:
            raw = z.read("sklearn/datasets/data/digits.csv.gz")
    data = np.loadtxt(io.StringIO(gzip.decompress(raw).decode()), delimiter=",")
    x = (data[:, :64] / 16.0).astype(np.float32)
    y = data[:, 64].astype(np.int64)
    return x, y


def init_layer(rng, n_in, n_out):
    w = rng.normal(0.0, np.sqrt(2.0 / n_in), size=(n_in, n_out)).astype(np.float32)
    return w, np.zeros(n_out, np.float32)


def forward(params, x):
    acts = [x]
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = np.maximum(h, 0.0)
        acts.append(h)
    return acts


def train(x, y, rng, epochs=60, batch=32, lr=0.05, weight_decay=1e-4):
    sizes = (64,) + HIDDEN + (10,)
    params = [init_layer(rng, a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    vel = [(np.zeros_like(w), np.zeros_like(b)) for w, b in params]
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            acts = forward(params, x[idx])
            logits = acts[-1]
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            grad = p
            grad[np.arange(len(idx)), y[idx]] -= 1.0
            grad /= len(idx)
            for i in reversed(range(len(params))):
                w, b = params[i]
                gw = acts[i].T @ grad + weight_decay * w
                gb = grad.sum(axis=0)
                if i > 0:
                    grad = (grad @ w.T) * (acts[i] > 0)
                vw, vb = vel[i]
                vw = 0.9 * vw - lr * gw
                vb = 0.9 * vb - lr * gb
                vel[i] = (vw, vb)
                params[i] = (w + vw, b + vb)
        if epoch % 20 == 19:
            acc = (forward(params, x)[-1].argmax(1) == y).mean()
            print(f"epoch {epoch + 1}: train accuracy {acc:.4f}")
    return params


def export(params, path):
    nodes, inits = [], []
    prev = "pixels"
    for i, (w, b) in enumerate(params):
        # Gemm with transB = 1: weights stored [out, in], the layout PyTorch exports.
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), f"fc{i + 1}.weight"))
        inits.append(numpy_helper.from_array(b, f"fc{i + 1}.bias"))
        out = "logits" if i == len(params) - 1 else f"fc{i + 1}"
        nodes.append(
            helper.make_node("Gemm", [prev, f"fc{i + 1}.weight", f"fc{i + 1}.bias"], [out], name=f"fc{i + 1}", transB=1)
        )
        if out != "logits":
            nodes.append(helper.make_node("Relu", [out], [f"relu{i + 1}"], name=f"relu{i + 1}"))
            prev = f"relu{i + 1}"
    graph = helper.make_graph(
        nodes,
        "digits",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="digits-train.py")
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--wheel", help="scikit-learn wheel holding sklearn/datasets/data/digits.csv.gz")
    src.add_argument("--csv", help="digits.csv.gz")
    ap.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent.parent / "models"))
    args = ap.parse_args()

    x, y = load_csv(args)
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(x))
    test, calib, trn = order[:N_TEST], order[N_TEST : N_TEST + N_CALIB], order[N_TEST + N_CALIB :]
    params = train(x[trn], y[trn], rng)
    test_acc = (forward(params, x[test])[-1].argmax(1) == y[test]).mean()
    print(f"test accuracy {test_acc:.4f} on {len(test)} samples")

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    export(params, out / "digits.onnx")
    np.save(out / "digits-calib.npy", x[calib])
    np.save(out / "digits-test.npy", x[test])
    np.save(out / "digits-test-labels.npy", y[test])
    try:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out / "digits.onnx"), providers=["CPUExecutionProvider"])
        ort_acc = (sess.run(None, {"pixels": x[test]})[0].argmax(1) == y[test]).mean()
        print(f"onnxruntime test accuracy {ort_acc:.4f}")
    except ImportError:
        pass


if __name__ == "__main__":
    main()
