#!/usr/bin/env python3
"""bench_quantize.py: speed and memory of `quantize-rs quantize` vs onnxruntime's quantizer.

    PY="$(scripts/setup-python.sh)"
    cargo build --release
    "$PY" scripts/bench_quantize.py [--bin target/release/quantize-rs] [--runs 5]
        [--layers 16] [--hidden 1024] [--skip-ours] [--skip-peer] [--json]

1. Builds (onnx helper API, seeded numpy; reused when already built) a synthetic
   float32 model with ~74 MB of weights under target/bench/:
     x [N,64,32,32] -> Conv 3x3 64->256 -> Relu -> Conv 3x3/2 256->256 -> Relu
       -> Conv 3x3/2 256->256 -> Relu -> GlobalAveragePool -> Flatten
       -> MatMul 256xH + Add + Relu -> LAYERS x (MatMul HxH + Add + Relu)
       -> MatMul Hx1000 + Add -> logits [N,1000]
   (H = --hidden, default 1024; 16 layers of 1024x1024 are 64 MiB.)
2. Runs, interleaved, --runs times each:
     ours: <BIN> quantize MODEL -o OUT --bits 8 --per-channel --format json
     ORT:  onnxruntime.quantization.quantize_dynamic(per_channel=True,
           weight_type=QInt8) in a fresh Python process (ort_peer_quantize.py)
   plus 3 runs of a Python process that only imports onnxruntime.quantization,
   to show how much of ORT's time and memory is interpreter + import.
   Wall time and the child's peak RSS are measured as in proc_measure.py
   (GNU time's %M, or a small fork/wait4 launcher).
3. Checks each last output against the float model in onnxruntime (worst float
   output SNR on 2 random inputs) so a fast but broken result is visible.
4. Prints the machine (nproc, CPU model), a markdown table (median and min wall
   time, peak RSS, peak RSS / model file size, SNR) and the ours/ORT ratios, and
   writes target/bench/results.json (--json: the JSON on stdout, the table on
   stderr). Exit 1 if a quantizer run failed, 2 on setup errors.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ort_compare  # noqa: E402
import proc_measure  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# The synthetic model.
# --------------------------------------------------------------------------


def build_model(path: Path, layers: int, hidden: int, seed: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def weight(name: str, shape, fan_in: int) -> str:
        w = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        inits.append(numpy_helper.from_array(w, name))
        return name

    def bias(name: str, n: int) -> str:
        inits.append(numpy_helper.from_array((rng.standard_normal(n, dtype=np.float32) * 0.01), name))
        return name

    cur = "x"
    convs = [(64, 256, 1), (256, 256, 2), (256, 256, 2)]
    for i, (cin, cout, stride) in enumerate(convs):
        w = weight(f"conv{i}.w", (cout, cin, 3, 3), cin * 9)
        b = bias(f"conv{i}.b", cout)
        nodes.append(helper.make_node("Conv", [cur, w, b], [f"conv{i}"], name=f"conv{i}",
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride]))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"conv{i}.relu"], name=f"conv{i}.relu"))
        cur = f"conv{i}.relu"
    nodes.append(helper.make_node("GlobalAveragePool", [cur], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flat", axis=1))
    cur, width = "flat", convs[-1][1]

    dims = [(width, hidden)] + [(hidden, hidden)] * layers
    for i, (k, n) in enumerate(dims):
        w = weight(f"fc{i}.w", (k, n), k)
        b = bias(f"fc{i}.b", n)
        nodes.append(helper.make_node("MatMul", [cur, w], [f"fc{i}.mm"], name=f"fc{i}.mm"))
        nodes.append(helper.make_node("Add", [f"fc{i}.mm", b], [f"fc{i}.add"], name=f"fc{i}.add"))
        nodes.append(helper.make_node("Relu", [f"fc{i}.add"], [f"fc{i}.relu"], name=f"fc{i}.relu"))
        cur = f"fc{i}.relu"
    w = weight("head.w", (hidden, 1000), hidden)
    b = bias("head.b", 1000)
    nodes.append(helper.make_node("MatMul", [cur, w], ["head.mm"], name="head.mm"))
    nodes.append(helper.make_node("Add", ["head.mm", b], ["logits"], name="head.add"))

    graph = helper.make_graph(
        nodes, "bench_synthetic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_quantize.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)


# --------------------------------------------------------------------------
# Measurement.
# --------------------------------------------------------------------------


def summarize(name: str, runs: List[dict], model_bytes: int) -> dict:
    ok = [r for r in runs if r["rc"] == 0]
    walls = [r["wall_s"] for r in ok]
    peaks = [r["peak_rss_mb"] for r in ok if r["peak_rss_mb"] is not None]
    s = {
        "name": name,
        "runs": len(runs),
        "failed": len(runs) - len(ok),
        "wall_s": [r["wall_s"] for r in runs],
        "peak_rss_mb": [r["peak_rss_mb"] for r in runs],
        "median_s": statistics.median(walls) if walls else None,
        "min_s": min(walls) if walls else None,
        "median_peak_mb": statistics.median(peaks) if peaks else None,
        "max_peak_mb": max(peaks) if peaks else None,
    }
    s["peak_over_file"] = s["max_peak_mb"] * 2**20 / model_bytes if s["max_peak_mb"] is not None else None
    if len(ok) < len(runs):
        bad = next(r for r in runs if r["rc"] != 0)
        s["error"] = f"exit {bad['rc']}: " + (bad["stdout"].strip()[-300:] or bad["stderr"].strip()[-300:])
    return s


def check_output(model: Path, out: Path) -> dict:
    """Pooled output SNR of `out` vs `model` on 2 seeded random inputs."""
    try:
        ref, cand = ort_compare.make_session(str(model)), ort_compare.make_session(str(out))
        rng = np.random.default_rng(0)
        feeds = [ort_compare.random_inputs(ref, {"N": 1}, rng, 10) for _ in range(2)]
        names = [o.name for o in ref.get_outputs()]
        ref_runs = [dict(zip(names, ref.run(names, f))) for f in feeds]
        cand_runs = [dict(zip(names, cand.run(names, f))) for f in feeds]
        _, pooled = ort_compare.compare_runs(ref_runs, cand_runs)
        return {"snr_db": pooled["snr_db"], "cosine": pooled["cosine"]}
    except Exception as e:  # noqa: BLE001
        return {"error": str(e)[:300]}


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def main() -> int:
    root = proc_measure.REPO_ROOT
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=str(root / "target/release/quantize-rs"))
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--layers", type=int, default=16, help="hidden HxH MatMul layers (default 16)")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=str(root / "target/bench"))
    p.add_argument("--skip-ours", action="store_true", help="do not run the quantize-rs binary")
    p.add_argument("--skip-peer", action="store_true", help="do not run onnxruntime's quantizer")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--json", action="store_true", help="results JSON on stdout, table on stderr")
    args = p.parse_args()

    binary = Path(args.bin)
    if not args.skip_ours and not (binary.is_file() and os.access(binary, os.X_OK)):
        log(f"quantize-rs binary not found at {binary}; build it (cargo build --release), pass --bin, or --skip-ours")
        return 2

    machine = proc_measure.machine_info()
    log(proc_measure.machine_line(machine))
    out_dir = Path(args.out_dir).resolve()
    model = out_dir / f"synthetic-l{args.layers}-h{args.hidden}-s{args.seed}.onnx"
    if not model.exists():
        log(f"building {model}")
        build_model(model, args.layers, args.hidden, args.seed)
    model_bytes = model.stat().st_size
    log(f"model: {model} ({model_bytes / 2**20:.1f} MiB)")

    ours_out = out_dir / "ours.int8-per-channel.onnx"
    peer_out = out_dir / "ort.quantize_dynamic.onnx"
    tools = []
    if not args.skip_ours:
        tools.append(("quantize-rs int8 per-channel", ours_out,
                      [str(binary), "quantize", str(model), "-o", str(ours_out), "--bits", "8", "--per-channel",
                       "--format", "json"]))
    if not args.skip_peer:
        tools.append(("ORT quantize_dynamic per-channel", peer_out,
                      [sys.executable, str(Path(__file__).resolve().parent / "ort_peer_quantize.py"),
                       str(model), str(peer_out)]))

    runs = {name: [] for name, _, _ in tools}
    for i in range(args.runs):
        for name, _, cmd in tools:
            r = proc_measure.run_measured(cmd, timeout=args.timeout)
            runs[name].append(r)
            log(f"  run {i + 1}/{args.runs} {name}: rc={r['rc']} {r['wall_s']:.2f}s "
                f"peak {fmt(r['peak_rss_mb'], '.0f')} MB")

    rows = []
    for name, out, _ in tools:
        s = summarize(name, runs[name], model_bytes)
        s["output"] = str(out)
        if out.exists() and not s["failed"]:
            s["out_bytes"] = out.stat().st_size
            s["size_ratio"] = s["out_bytes"] / model_bytes
            s.update(check_output(model, out))
        rows.append(s)
    if not args.skip_peer:
        base = [proc_measure.run_measured([sys.executable, "-c", "import onnxruntime.quantization"]) for _ in range(3)]
        baseline = summarize("(python + import onnxruntime.quantization only)", base, model_bytes)
        baseline["peak_over_file"] = None  # not about the model
        rows.append(baseline)

    by_name = {r["name"]: r for r in rows}
    ours = by_name.get("quantize-rs int8 per-channel")
    peer = by_name.get("ORT quantize_dynamic per-channel")
    ratios = None
    if ours and peer:
        ratios = {
            "median_time_ours_over_ort": ratio(ours["median_s"], peer["median_s"]),
            "peak_rss_ours_over_ort": ratio(ours["max_peak_mb"], peer["max_peak_mb"]),
        }

    lines = [
        "",
        proc_measure.machine_line(machine),
        f"model: {model.name}, {model_bytes / 2**20:.1f} MiB float32 (3 Conv + {args.layers + 2} MatMul); "
        f"{args.runs} runs each, interleaved; peak RSS via {proc_measure.rss_method()}",
        "",
        "| tool | median s | min s | peak RSS MB | peak / file | size ratio | SNR dB | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["name"], fmt(r["median_s"], ".2f"), fmt(r["min_s"], ".2f"), fmt(r["max_peak_mb"], ".0f"),
            fmt(r["peak_over_file"], ".2f"), fmt(r.get("size_ratio"), ".3f"), fmt(r.get("snr_db"), ".1f"),
            f"{r['failed']}/{r['runs']}"))
    if ratios:
        lines += ["", f"ours/ORT: median time x{fmt(ratios['median_time_ours_over_ort'], '.2f')}, "
                      f"peak RSS x{fmt(ratios['peak_rss_ours_over_ort'], '.2f')}"]
    for r in rows:
        if r.get("error"):
            lines.append(f"ERROR {r['name']}: {r['error']}")

    results = {"machine": machine, "rss_method": proc_measure.rss_method(), "model": str(model),
               "model_bytes": model_bytes, "layers": args.layers, "hidden": args.hidden, "runs": args.runs,
               "rows": rows, "ratios": ratios}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(ort_compare.dumps(results, indent=1))
    text = "\n".join(lines)
    if args.json:
        print(text, file=sys.stderr)
        print(ort_compare.dumps(results))
    else:
        print(text)
        print(f"\nresults: {out_dir / 'results.json'}")
    failed = any(r["failed"] for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
