#!/usr/bin/env python3
"""more_models.py: real models of other kinds than real_models.py's (control flow, recurrent,
fp16-exported, a byte classifier), quantized by quantize-rs and checked in ONNX Runtime.

    PY="$(scripts/setup-python.sh)"
    "$PY" scripts/more_models.py [--bin target/release/quantize-rs] [--out-dir target/more-models]
        [--wheel-cache target/real-models/wheels] [--json OUT] [--no-gate]

Models (PyPI wheels, `pip download --no-deps`, cached in --wheel-cache):
  silero-vad==6.2.3   Silero VAD v5/v6, voice activity detection on 512-sample 16 kHz chunks:
      vad            silero_vad.onnx: the whole model inside an If on the sample rate (Conv, LSTM
                     cell as MatMuls, STFT as Conv), opset 16
      vad-op15       silero_vad_16k_op15.onnx: STFT and encoder in the main graph, decoder in Ifs
      vad-ifless     silero_vad_op18_ifless.onnx: opset 18, one If, tables gathered in the body
      vad-half       silero_vad_half.onnx: the fp16-trained export (float32 I/O)
      vad-sequence   silero_vad_16k_sequence.onnx: a sequence of chunks through an LSTM
  magika==1.0.3       Google's file-type classifier (bytes -> content type), MatMul/Tanh/Softmax
      magika         models/standard_v3_3/model.onnx

Inputs are synthetic (nothing to download at run time): for the VAD, modulated tones of random
pitch and loudness plus noise, a third of the chunks noise only, states zero; for magika, random
bytes (0-255, 256 = padding). Held-out inputs use other seeds than the calibration samples. None
of it is speech (synthetic vowels did not move the VAD either): its speech probability sits near
0.001, where a few tenths of error in the logit are a large relative error, so the VAD's figures
are harsh ones; its state outputs are the other float outputs counted.

Configurations: `int8` (quantize, the default recipe), `int4-blocked32` (--bits 4 --block-size
32), `dynamic` (--dynamic), `static` (calibrate, MinMax, on 32 synthetic samples; magika only:
the VAD's convolutions live inside If bodies, which static calibration does not reach, or in a
graph tract cannot run). The script also checks that quantize-rs refuses static calibration of
those VAD models with an error naming what to do, not a crash.

Figures: worst float output SNR in ORT (1 thread) against the float model over the held-out
inputs, and file size over float size. Gated by scripts/floors.py (script "more").
Exit status: 0 when everything quantized, loaded, ran and passed its gates; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floors  # noqa: E402
from real_models import Wheel, extract_member, fetch_wheel, fmt, log  # noqa: E402

WHEELS = {"silero": Wheel("silero-vad", "6.2.3"), "magika": Wheel("magika", "1.0.3")}
MODELS = {
    "vad": ("silero", "silero_vad/data/silero_vad.onnx"),
    "vad-op15": ("silero", "silero_vad/data/silero_vad_16k_op15.onnx"),
    "vad-ifless": ("silero", "silero_vad/data/silero_vad_op18_ifless.onnx"),
    "vad-half": ("silero", "silero_vad/data/silero_vad_half.onnx"),
    "vad-sequence": ("silero", "silero_vad/data/silero_vad_16k_sequence.onnx"),
    "magika": ("magika", "magika/models/standard_v3_3/model.onnx"),
}
CONFIGS = {
    "int8": ["quantize"],
    "int4-blocked32": ["quantize", "--bits", "4", "--block-size", "32"],
    "dynamic": ["quantize", "--dynamic"],
    "static": ["calibrate", "--data", "{calib}"],
}
STATIC_MODELS = ("magika",)
# Static calibration must refuse these with a message (exit status 1), not crash.
STATIC_REFUSED = ("vad", "vad-op15", "vad-ifless")
EVAL, CALIB = 16, 32


def audio(n: int, seed: int, width: int = 512) -> np.ndarray:
    r = np.random.default_rng(seed)
    t = np.arange(width) / 16000.0
    out = np.empty((n, width), np.float32)
    for k in range(n):
        amp = r.uniform(0.05, 0.5) if k % 3 else 0.0
        f0 = r.uniform(90, 400)
        tone = amp * np.sin(2 * np.pi * f0 * t) * (1 + 0.5 * np.sin(2 * np.pi * r.uniform(2, 8) * t))
        out[k] = tone + r.uniform(0.001, 0.05) * r.standard_normal(width)
    return out


def samples(model_inputs, n: int, seed: int) -> List[Dict[str, np.ndarray]]:
    """`n` feeds for a model with `model_inputs` (ORT NodeArgs)."""
    names = {i.name: i for i in model_inputs}
    feeds: List[Dict[str, np.ndarray]] = [{} for _ in range(n)]
    for name, arg in names.items():
        if name == "bytes":
            vals = np.random.default_rng(seed).integers(0, 257, (n, 1, arg.shape[1])).astype(np.int32)
        elif name == "input" and arg.shape[-1] == 576:  # a sequence of 9 chunks with 64 samples of context
            vals = audio(n * 9, seed, 576).reshape(n, 9, 576)
        elif name == "input":
            vals = audio(n, seed)[:, None, :]
        elif name == "state":
            vals = np.zeros((n, 2, 1, 128), np.float32)
        elif name in ("h", "c"):
            vals = np.zeros((n, 1, 1, 128), np.float32)
        elif name == "sr":
            vals = np.full((n,), 16000, np.int64)
        else:
            raise SystemExit(f"no synthetic data for input {name!r}")
        for k in range(n):
            feeds[k][name] = np.asarray(vals[k])
    return feeds


def snr_db(ref: List[List[np.ndarray]], got: List[List[np.ndarray]]) -> float:
    """Worst float output's SNR over all feeds; an integer output that differs is -inf."""
    worst = float("inf")
    for o in range(len(ref[0])):
        a = np.concatenate([r[o].ravel() for r in ref])
        b = np.concatenate([g[o].ravel() for g in got])
        if not np.issubdtype(a.dtype, np.floating):
            if not np.array_equal(a, b):
                return float("-inf")
            continue
        a, b = a.astype(np.float64), b.astype(np.float64)
        noise = float(((a - b) ** 2).sum())
        worst = min(worst, 10 * np.log10(float((a * a).sum()) / noise) if noise > 0 else 200.0)
    return worst


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", default=str(root / "target/release/quantize-rs"))
    p.add_argument("--out-dir", default=str(root / "target/more-models"))
    p.add_argument("--wheel-cache", default=str(root / "target/real-models/wheels"))
    p.add_argument("--json", default=None, metavar="OUT")
    p.add_argument("--no-gate", action="store_true")
    args = p.parse_args()
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    out = Path(args.out_dir)
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "q").mkdir(exist_ok=True)
    start = time.time()
    paths: Dict[str, Path] = {}
    for key, wheel in WHEELS.items():
        whl = fetch_wheel(wheel, Path(args.wheel_cache))
        with zipfile.ZipFile(whl) as zf:
            for name, (w, member) in MODELS.items():
                if w == key:
                    paths[name] = out / "models" / f"{name}.onnx"
                    extract_member(zf, member, paths[name])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    rows, problems = [], []
    for name, src in paths.items():
        float_sess = ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
        held_out = samples(float_sess.get_inputs(), EVAL, 1000)
        ref = [float_sess.run(None, f) for f in held_out]
        calib = out / f"{name}.calib.npz"
        cal = samples(float_sess.get_inputs(), CALIB, 1)
        np.savez(calib, **{k: np.stack([f[k] for f in cal]) for k in cal[0]})
        for config, argv in CONFIGS.items():
            if config == "static" and name not in STATIC_MODELS:
                continue
            dst = out / "q" / f"{name}.{config}.onnx"
            cmd = [args.bin, argv[0], str(src), "-o", str(dst), "--force",
                   *[a.replace("{calib}", str(calib)) for a in argv[1:]]]
            log(f"  {name} {config}: {' '.join(cmd)}")
            r = subprocess.run(cmd, capture_output=True, text=True)
            row = {"kind": "ours", "model": name, "config": config, "gate_values": {}, "note": ""}
            rows.append(row)
            if r.returncode != 0:
                row["note"] = f"quantize failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1:]}"
                problems.append(f"{name} {config}: {row['note']}")
                continue
            try:
                sess = ort.InferenceSession(str(dst), opts, providers=["CPUExecutionProvider"])
                got = [sess.run(None, f) for f in held_out]
            except Exception as e:  # a model ORT cannot load or run is a failure of ours
                row["note"] = f"ORT: {str(e)[:200]}"
                problems.append(f"{name} {config}: {row['note']}")
                continue
            row["gate_values"] = {"snr_db": snr_db(ref, got), "size_ratio": dst.stat().st_size / src.stat().st_size}
        if name in STATIC_REFUSED:
            r = subprocess.run([args.bin, "calibrate", str(src), "--data", str(calib), "-o",
                                str(out / "q" / f"{name}.refused.onnx"), "--force"], capture_output=True, text=True)
            said = r.stderr.strip()
            if r.returncode not in (1, 2) or "panicked" in said or not said.startswith("error:"):
                problems.append(f"{name} static: expected a clean refusal (exit 1 or 2, 'error: ...'), got exit "
                                f"{r.returncode}: {said[-300:]}")
            else:
                log(f"  {name} static: refused as expected: {said.splitlines()[0][:160]}")
    print("| model | config | SNR dB | size ratio | notes |\n|---|---|---:|---:|---|")
    for row in rows:
        g = row["gate_values"]
        print(f"| {row['model']} | {row['config']} | {fmt(g.get('snr_db'), '.2f')} | "
              f"{fmt(g.get('size_ratio'), '.3f')} | {row['note']} |")
    failed = []
    if not args.no_gate:
        for row in rows:
            if row["gate_values"]:
                failed += [g for g in floors.check("more", row["model"], row["config"], row["gate_values"], False)
                           if not g["pass"]]
    print(f"\nSynthetic held-out inputs ({EVAL} per model), ORT 1 thread. Elapsed {time.time() - start:.0f} s.")
    result = {"rows": rows, "problems": problems, "failures": failed}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=float))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float))
    for msg in problems:
        print(f"  PROBLEM {msg}")
    for g in failed:
        print(f"  FAILED {g['model']} {g['config']}: {g['gate']} (value {g['value']})")
    print(f"Gates (scripts/floors.py): {'skipped' if args.no_gate else 'see above' if failed else 'all passed'}")
    return 1 if problems or failed else 0


if __name__ == "__main__":
    sys.exit(main())
