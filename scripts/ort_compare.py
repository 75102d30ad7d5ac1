#!/usr/bin/env python3
"""ort_compare.py: compare a candidate ONNX model against a reference in onnxruntime.

Used by the Rust integration tests to check a quantized model against its float
original, and imported by real_models.py / bench_quantize.py for the metrics.

Compare (prints one JSON object on stdout):

    python scripts/ort_compare.py --reference float.onnx --candidate quant.onnx \
        [--seed 0] [--samples 4] [--dim batch=1 --dim height=32 ...] \
        [--inputs sample.npz]

    {"ok": true,
     "outputs": {"<name>": {"snr_db": 41.2, "cosine": 0.9999, "max_abs": 0.01,
                            "shape": [1, 10]}, ...},
     "pooled": {"snr_db": 40.8, "cosine": 0.9999, "exact": true, "worst": "<name>"},
     "samples": 4}

Check that a model loads and runs once:

    python scripts/ort_compare.py --check-loads model.onnx [--dim ...]
    {"ok": true, "outputs": {"<name>": {"shape": [...], "dtype": "float32"}}}

Inputs: K random samples (--samples, default 1) built from the reference's
declared inputs, seeded by --seed. Symbolic or unknown dims take their value from
--dim NAME=VALUE; otherwise the first dim is 1 (batch) and any other is 8.
Float inputs are standard normal, integer inputs uniform in [0, --int-high),
bool inputs random. With --inputs, samples are read from a file instead:
  * .npz keyed by input name -> one sample; keys "NAME:K" give sample K;
  * .npy (single-input models only) -> one sample.

Metrics per output over all samples (computed in float64). "pooled" is the
summary that decides: the WORST float output's snr_db and cosine (a pooled sum
would let an exact integer output of large magnitude hide a broken float one),
and "exact": whether every integer/bool output matches bit for bit (an integer
output that differs also sets snr_db to -999.0). Integer outputs get
"mismatches" (values that differ).
  snr_db = 10*log10(sum(ref^2) / sum((ref-cand)^2)); identical outputs give
           +999.0 (so the JSON stays valid), a zero reference with a non-zero
           difference or a non-finite candidate gives -999.0;
  cosine = <ref, cand> / (|ref| |cand|), 1.0 if both are zero, 0.0 if one is;
  max_abs = max |ref - cand|, null when not finite; "nonfinite" (count of
           non-finite candidate values) is added to an output when non-zero.

Sessions: CPUExecutionProvider, 1 intra-op and 1 inter-op thread, default
graph optimisations.

Exit codes: 0 ok; 1 the candidate (or the --check-loads model) failed to load
or run, or its outputs do not match the reference's names/shapes; 2 the
reference failed or the command line / input file is wrong. On failure the
JSON is {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Dict, List, Optional

import numpy as np

SNR_CAP_DB = 999.0

ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


class CompareError(Exception):
    """A failure with an exit code (1: candidate side, 2: reference/usage)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


class ErrorAccumulator:
    """Running sums for SNR and cosine over any number of array pairs."""

    def __init__(self) -> None:
        self.signal = 0.0  # sum ref^2
        self.noise = 0.0  # sum (ref - cand)^2
        self.dot = 0.0  # sum ref * cand
        self.cand_sq = 0.0  # sum cand^2
        self.max_abs = 0.0
        self.nonfinite = 0  # non-finite values in the candidate

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r = np.asarray(ref, dtype=np.float64).ravel()
        c = np.asarray(cand, dtype=np.float64).ravel()
        if r.shape != c.shape:
            raise ValueError(f"size mismatch {r.size} vs {c.size}")
        self.nonfinite += int(c.size - np.count_nonzero(np.isfinite(c)))
        d = r - c
        self.signal += float(np.dot(r, r))
        self.noise += float(np.dot(d, d))
        self.dot += float(np.dot(r, c))
        self.cand_sq += float(np.dot(c, c))
        if d.size:
            m = float(np.max(np.abs(d)))
            self.max_abs = max(self.max_abs, m) if math.isfinite(m) else math.inf

    def snr_db(self) -> float:
        return snr_from_sums(self.signal, self.noise)

    def cosine(self) -> float:
        return cosine_from_sums(self.dot, self.signal, self.cand_sq)


def snr_from_sums(signal: float, noise: float) -> float:
    if not (math.isfinite(signal) and math.isfinite(noise)):
        return -SNR_CAP_DB
    if noise == 0.0:
        return SNR_CAP_DB
    if signal == 0.0:
        return -SNR_CAP_DB
    return float(max(-SNR_CAP_DB, min(SNR_CAP_DB, 10.0 * math.log10(signal / noise))))


def cosine_from_sums(dot: float, ref_sq: float, cand_sq: float) -> float:
    if not all(math.isfinite(v) for v in (dot, ref_sq, cand_sq)):
        return 0.0
    if ref_sq == 0.0 and cand_sq == 0.0:
        return 1.0
    if ref_sq == 0.0 or cand_sq == 0.0:
        return 0.0
    return float(max(-1.0, min(1.0, dot / math.sqrt(ref_sq * cand_sq))))


def json_number(x: float) -> Optional[float]:
    """Finite floats as is, anything else as null (JSON has no inf/nan)."""
    return float(x) if math.isfinite(x) else None


def json_safe(obj):
    """A copy of obj with non-finite floats (and numpy scalars) made JSON-safe."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return json_number(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def dumps(obj, **kw) -> str:
    """json.dumps that never emits NaN/Infinity."""
    return json.dumps(json_safe(obj), allow_nan=False, default=str, **kw)


# --------------------------------------------------------------------------
# onnxruntime helpers
# --------------------------------------------------------------------------


OPT_LEVELS = ("disable", "basic", "extended", "all")


def make_session(path: str, opt_level: str = "all"):
    """An ORT session, 1 thread. `opt_level` "disable" runs every node as the ONNX spec defines it
    (DequantizeLinear as (q - zp) * scale, no fusion into integer or MatMulNBits kernels, which
    may quantize activations on their own)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt_level]
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 4  # fatal only: failures are reported in the JSON
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def parse_dims(items: List[str]) -> Dict[str, int]:
    dims: Dict[str, int] = {}
    for item in items or []:
        if "=" not in item:
            raise CompareError(f"--dim expects NAME=VALUE, got {item!r}", 2)
        name, value = item.rsplit("=", 1)
        try:
            dims[name] = int(value)
        except ValueError:
            raise CompareError(f"--dim {item!r}: value is not an integer", 2) from None
    return dims


def concrete_shape(shape, dims: Dict[str, int]) -> List[int]:
    out = []
    for i, d in enumerate(shape):
        if isinstance(d, int) and d >= 0:
            out.append(d)
        elif isinstance(d, str) and d in dims:
            out.append(dims[d])
        else:
            out.append(1 if i == 0 else 8)
    return out


def random_inputs(session, dims: Dict[str, int], rng: np.random.Generator, int_high: int):
    feed = {}
    for inp in session.get_inputs():
        dtype = ORT_TO_NUMPY.get(inp.type)
        if dtype is None:
            raise CompareError(f"input {inp.name}: unsupported type {inp.type}", 2)
        shape = concrete_shape(inp.shape, dims)
        if dtype == np.bool_:
            arr = rng.integers(0, 2, size=shape).astype(np.bool_)
        elif np.issubdtype(dtype, np.floating):
            arr = rng.standard_normal(size=shape).astype(dtype)
        else:
            arr = rng.integers(0, max(1, int_high), size=shape).astype(dtype)
        feed[inp.name] = arr
    return feed


def load_input_file(path: str, session) -> List[Dict[str, np.ndarray]]:
    names = [i.name for i in session.get_inputs()]
    if path.endswith(".npy"):
        if len(names) != 1:
            raise CompareError(f"{path}: .npy needs a single-input model, it has {names}", 2)
        return [{names[0]: np.load(path)}]
    try:
        data = np.load(path)
    except Exception as e:  # noqa: BLE001
        raise CompareError(f"cannot read {path}: {e}", 2) from None
    keys = list(data.keys())
    samples: Dict[int, Dict[str, np.ndarray]] = {}
    for key in keys:
        if key in names:
            samples.setdefault(0, {})[key] = data[key]
            continue
        name, _, idx = key.rpartition(":")
        if name in names and idx.isdigit():
            samples.setdefault(int(idx), {})[name] = data[key]
        else:
            raise CompareError(f"{path}: key {key!r} is not an input ({names})", 2)
    result = []
    for k in sorted(samples):
        missing = [n for n in names if n not in samples[k]]
        if missing:
            raise CompareError(f"{path}: sample {k} lacks inputs {missing}", 2)
        result.append(samples[k])
    if not result:
        raise CompareError(f"{path}: no inputs found", 2)
    return result


def run(session, feed):
    names = [o.name for o in session.get_outputs()]
    return names, session.run(names, feed)


# --------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------


def compare_runs(ref_runs, cand_runs):
    """ref_runs / cand_runs: lists (one per sample) of dict name -> array.

    Returns the "outputs" and "pooled" parts of the report ("pooled": the worst float output's
    figures, and whether integer outputs are exact). Raises CompareError (code 1) when the
    candidate's outputs do not line up with the reference's.
    """
    names = list(ref_runs[0].keys())
    per_output = {n: ErrorAccumulator() for n in names}
    mismatches = {n: 0 for n in names}
    integer = {}
    shapes = {}
    for ref, cand in zip(ref_runs, cand_runs):
        for n in names:
            if n not in cand:
                raise CompareError(f"candidate has no output {n!r} (has {sorted(cand)})", 1)
            r, c = np.asarray(ref[n]), np.asarray(cand[n])
            if r.shape != c.shape:
                raise CompareError(f"output {n!r}: shape {list(c.shape)} != reference {list(r.shape)}", 1)
            shapes.setdefault(n, list(r.shape))
            integer.setdefault(n, not np.issubdtype(r.dtype, np.floating))
            if integer[n]:
                mismatches[n] += int(np.count_nonzero(r != c))
            per_output[n].add(r, c)
    outputs = {}
    for n in names:
        acc = per_output[n]
        entry = {
            "snr_db": acc.snr_db(),
            "cosine": acc.cosine(),
            "max_abs": json_number(acc.max_abs),
            "shape": shapes[n],
        }
        if integer[n]:
            entry["kind"] = "integer"
            entry["mismatches"] = mismatches[n]
        if acc.nonfinite:
            entry["nonfinite"] = acc.nonfinite
        outputs[n] = entry
    floats = [n for n in names if not integer[n]]
    exact = all(mismatches[n] == 0 for n in names if integer[n])
    worst = min(floats, key=lambda n: outputs[n]["snr_db"]) if floats else None
    snr = outputs[worst]["snr_db"] if worst else SNR_CAP_DB
    cosine = min((outputs[n]["cosine"] for n in floats), default=1.0)
    if not exact:
        snr = -SNR_CAP_DB
    return outputs, {"snr_db": snr, "cosine": cosine, "exact": exact, "worst": worst}


def do_compare(args) -> dict:
    dims = parse_dims(args.dim)
    try:
        ref_sess = make_session(args.reference, args.opt_level)
    except Exception as e:  # noqa: BLE001
        raise CompareError(f"reference failed to load: {e}", 2) from None
    try:
        cand_sess = make_session(args.candidate, args.opt_level)
    except Exception as e:  # noqa: BLE001
        raise CompareError(f"candidate failed to load: {e}", 1) from None

    ref_inputs = {i.name for i in ref_sess.get_inputs()}
    cand_inputs = {i.name for i in cand_sess.get_inputs()}
    if ref_inputs != cand_inputs:
        raise CompareError(f"input names differ: reference {sorted(ref_inputs)}, candidate {sorted(cand_inputs)}", 1)

    if args.inputs:
        feeds = load_input_file(args.inputs, ref_sess)
    else:
        rng = np.random.default_rng(args.seed)
        feeds = [random_inputs(ref_sess, dims, rng, args.int_high) for _ in range(max(1, args.samples))]

    ref_runs, cand_runs = [], []
    for feed in feeds:
        try:
            names, outs = run(ref_sess, feed)
        except Exception as e:  # noqa: BLE001
            raise CompareError(f"reference failed to run: {e}", 2) from None
        ref_runs.append(dict(zip(names, outs)))
        try:
            names, outs = run(cand_sess, feed)
        except Exception as e:  # noqa: BLE001
            raise CompareError(f"candidate failed to run: {e}", 1) from None
        cand_runs.append(dict(zip(names, outs)))

    outputs, pooled = compare_runs(ref_runs, cand_runs)
    return {"outputs": outputs, "pooled": pooled, "samples": len(feeds), "ok": True}


def do_check_loads(args) -> dict:
    dims = parse_dims(args.dim)
    try:
        sess = make_session(args.check_loads)
    except Exception as e:  # noqa: BLE001
        raise CompareError(f"failed to load: {e}", 1) from None
    if args.inputs:
        feed = load_input_file(args.inputs, sess)[0]
    else:
        feed = random_inputs(sess, dims, np.random.default_rng(args.seed), args.int_high)
    try:
        names, outs = run(sess, feed)
    except Exception as e:  # noqa: BLE001
        raise CompareError(f"failed to run: {e}", 1) from None
    return {
        "ok": True,
        "outputs": {n: {"shape": list(np.shape(o)), "dtype": str(np.asarray(o).dtype)} for n, o in zip(names, outs)},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", help="float (reference) model")
    p.add_argument("--candidate", help="model to compare, e.g. the quantized one")
    p.add_argument("--check-loads", metavar="MODEL", help="only load MODEL and run it once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=1, help="number of random input samples (default 1)")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE", help="value of a symbolic dim; repeatable")
    p.add_argument("--inputs", help=".npz (keyed by input name, or NAME:K) or .npy with the inputs to use")
    p.add_argument("--int-high", type=int, default=10, help="integer inputs are drawn from [0, INT_HIGH)")
    p.add_argument("--opt-level", choices=OPT_LEVELS, default="all",
                   help="ORT graph optimization for both models (disable: every node as the spec defines it)")
    args = p.parse_args(argv)

    try:
        if args.check_loads:
            report = do_check_loads(args)
        elif args.reference and args.candidate:
            report = do_compare(args)
        else:
            raise CompareError("give --reference and --candidate, or --check-loads MODEL", 2)
    except CompareError as e:
        print(dumps({"ok": False, "error": str(e)}))
        return e.code
    print(dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
