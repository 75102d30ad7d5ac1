#!/usr/bin/env python3
"""floors.py: every figure the real-model scripts gate, in one table.

    python scripts/floors.py show                      # the table, one line per gate
    python scripts/floors.py propose --at KEY \\
        [--static RUN1/static-results.json ...] [--weights RUN1/results.json ...]
    python scripts/floors.py recheck [--static FILE] [--weights FILE] [--set METRIC=LIMIT ...]
                                   # the table applied again to saved results (--set: every
                                   # limit of METRIC replaced, to show a gate can fail)

RULES (read before editing FLOORS):
 - Each entry holds the limit, the value it was set from (`measured`: over several runs, the
   worst one) and where that was measured (`at`, a key of SOURCES: commit, date, command, load).
 - A floor may only be LOWERED (a ceiling only raised) in a commit whose message says which
   change costs it and why that is worth it. Raising floors needs no reason: do it whenever a
   measurement supports it (`propose` prints entries from new result files).
 - Limits sit below the worst measured value by a stated margin (`propose`, MARGINS below), never
   below what the claims in README.md / BENCHMARKS.md say.
 - A row of ours that has no entry for a metric FAILS ("no floor"): a new model, scheme or method
   must come with its floors.

Metrics, per (script, model, config):
  static (static_compare.py; config = range method; ORT = quantize_static MinMax in the same run):
    snr_db >=, task >=        worst float output SNR / task agreement vs float on the held-out inputs
    size_ratio <=             quantized / float file size
    q >=, dq >=               QuantizeLinear / DequantizeLinear nodes in the file
    ort_int_kernels >=        integer kernels in ORT's optimized graph (qdq_counts.py)
    peak_mb <=                the quantizer's peak RSS (claim: under 0.5 GB)
    calib_vs_ort <=           our calibration time / ORT MinMax's (fastest of repeated runs)
    speed_vs_ort >=           ORT latency of ORT's model / of ours (= our speedup over float /
                              ORT's), median over interleaved rounds; claim: faster, gate 0.9
    speedup >=                float latency / ours, median over interleaved rounds
  transformer (transformer.py; model = minilm-matmul / minilm-gemm; ORT = quantize_dynamic):
    snr_db, size_ratio, speedup as above (SNR over real tokens)
    speed_vs_ort >=           dynamic rows: our speedup over float / ORT quantize_dynamic's
  more (more_models.py; silero-vad and magika on synthetic inputs; config = int8 / int4-blocked32 /
        dynamic / static):
    snr_db, size_ratio as above
  weights (real_models.py; config = scheme; ORT = quantize_dynamic in the same run):
    snr_db, task, size_ratio, peak_mb as above
    dq >=, int_tensors >=     DequantizeLinear nodes / integer weight tensors in the file
    time_vs_ort <=            our quantize time / ORT quantize_dynamic's (same model)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple


class Floor(NamedTuple):
    op: str  # ">=" (a floor) or "<=" (a ceiling)
    limit: float
    measured: float  # the worst value of the runs it was set from
    at: str  # key of SOURCES


# The claims the constant limits come from.
PEAK_MB_MAX = 500.0  # "peak memory under 0.5 GB" (BENCHMARKS: 50-410 MB on every model and method)
SPEED_VS_ORT_MIN = 0.9  # "faster than ORT's model on every model", with 10% for a noisy machine
CALIB_VS_ORT_MAX = 1.1  # "calibration takes at most ORT's MinMax run's time", with 10%
# weight-only: "never slower than ORT's quantize_dynamic" on the real models (0.05-0.87 measured
# 2026-11-30 with the weight-range search; it was 0.5 for symmetric min-max, which did no search)
TIME_VS_ORT_MAX = 1.0

# How `propose` turns the worst measured value into a limit.
MARGINS = {
    "snr_db": "worst - max(0.3 dB, 2% of it), rounded down to 0.1",
    "task": "worst - 0.03, rounded down to 0.01",
    "size_ratio": "worst * 1.03, rounded up to 0.001",
    "q/dq/int_tensors/ort_int_kernels": "the smallest count measured (exact: deterministic)",
    "speedup": "min(1.0, worst * 0.85), rounded down to 0.01: faster than float where we claim it, else 15%"
               " below (absolute latency depends on the CPU: with and without VNNI differ by 1.3x)",
    "peak_mb (weights)": "worst * 1.5, rounded up to 10 MB",
    "peak_mb/calib_vs_ort/speed_vs_ort/time_vs_ort": "the constant of the claim above; calib_vs_ort where the"
                                                     " worst run is within 10% of it: worst * 1.1, rounded up to"
                                                     " 0.05, an exception stated in the table",
}

SOURCES: Dict[str, str] = {
    "2026-11-30": "worst of 3 runs of real_models.py and static_compare.py (--peer-methods minmax), 2026-11-30,"
                  " release binary of the working tree on 7dbc750 (with other engineers' uncommitted src/ changes),"
                  " 2-core AMD EPYC with AVX-512 VNNI, ONNX Runtime 1.32.0, under load (other engineers' cargo builds"
                  " ran throughout); for static SNR and task also the BENCHMARKS table at b22e063 (2026-11-27, a"
                  " 2-core EPYC without VNNI), so that the floors hold on CPUs with and without VNNI",
    "2026-11-30 scheme": "worst of 2 runs of real_models.py --seed-peer, 2026-11-30 21:44, release build of eebad6f"
                         " (the issue-11 weight scheme: per-scale symmetry, mse ranges, mean-preserving"
                         " rounding), 2-core AMD EPYC with AVX-512 VNNI, ONNX Runtime 1.32.0, the machine quiet",
    "2026-11-30 transformer": "worst of 2 runs of transformer.py --no-gate, 2026-11-30 23:56-00:03, release build"
                              " of 01ba0fa (dynamic, outlier split, gathered tables, QGemm zero points), 2-core AMD"
                              " EPYC with AVX-512 VNNI, ONNX Runtime 1.32.0, another engineer's cargo build running",
    "2026-12-01 static products": "worst of 2 runs of transformer.py --no-gate and 1 of static_compare.py"
                                  " --peer-methods minmax, 2026-12-01 02:40-02:55, release build of 22da44a (static"
                                  " matrix products: inputs quantized, outputs float, attention float, outlier split;"
                                  " rec/cls lose the Q/DQ pairs of their MatMul/Gemm outputs and attention products,"
                                  " so their Q/DQ and integer-kernel counts fall: rec 103->82 Q, 51->47 kernels; cls"
                                  " 91->90, 56->55), 2-core AMD EPYC with AVX-512 VNNI, ONNX Runtime 1.32.0, a"
                                  " helper's cargo build running",
    "2026-12-01 more": "2 runs of more_models.py --no-gate (deterministic: identical figures), 2026-12-01 03:17,"
                       " release build of 2007f2e, ONNX Runtime 1.32.0; synthetic non-speech inputs, so the VAD's"
                       " probability output sits near 0.001 and int4 on it falls below 0 dB (kept as measured:"
                       " the floors catch crashes and regressions, not a claim that int4 suits the VAD)",
    "2026-12-01 probe": "worst of 2 runs of transformer.py --no-gate, 2026-12-01 03:33-03:36, release build of"
                        " the probe change (--dynamic without samples splits outlier channels found on random token"
                        " ids), ONNX Runtime 1.32.0, the machine otherwise quiet",
    "2026-11-30 idle": "the cold-clone .ci/run of 315d77e (2026-11-30 17:44-18:17, BENCHMARKS 'CI gates'), the"
                       " machine otherwise idle: static_compare.py --peer-methods minmax, 3 timed calibrations each",
}

FLOORS: Dict[Tuple[str, str, str, str], Floor] = {
    ('transformer', 'minilm-gemm', 'qrs-dynamic', 'size_ratio'): Floor('<=', 0.266, 0.2574, '2026-12-01 probe'),
    ('transformer', 'minilm-gemm', 'qrs-dynamic', 'snr_db'): Floor('>=', 22.9, 23.3776, '2026-12-01 probe'),
    # EXCEPTION: without samples, --dynamic now splits the outlier channels it finds on random token ids
    # (+6.5 dB: 16.9 -> 23.4); the side products cost the Gemm export 0.90-0.92 of ORT's dynamic speed
    # (before: 0.98-1.01), as with --dynamic --data below; the floor keeps 0.85.
    ('transformer', 'minilm-gemm', 'qrs-dynamic', 'speed_vs_ort'): Floor('>=', 0.85, 0.9064, '2026-12-01 probe'),
    ('transformer', 'minilm-gemm', 'qrs-dynamic', 'speedup'): Floor('>=', 1, 2.6358, '2026-11-30 transformer'),
    ('transformer', 'minilm-gemm', 'qrs-dynamic+data', 'size_ratio'): Floor('<=', 0.266, 0.2577, '2026-12-01 static products'),
    ('transformer', 'minilm-gemm', 'qrs-dynamic+data', 'snr_db'): Floor('>=', 25, 25.5572, '2026-11-30 transformer'),
    # EXCEPTION: the outlier split's float side products cost ~8-13% of the dynamic model's speed; on
    # the Gemm export that lands at 0.91-0.95 of ORT's dynamic model (0.89-0.90 before the side Gemm
    # took the Add and the Reshapes were merged; matmul export: 1.04-1.10), so the 0.9 claim holds
    # only just there and the floor keeps 0.85 (BENCHMARKS 'A real transformer').
    ('transformer', 'minilm-gemm', 'qrs-dynamic+data', 'speed_vs_ort'): Floor('>=', 0.85, 0.9164, '2026-12-01 static products'),
    ('transformer', 'minilm-gemm', 'qrs-dynamic+data', 'speedup'): Floor('>=', 1, 2.3889, '2026-11-30 transformer'),
    ('transformer', 'minilm-gemm', 'qrs-static-mse', 'size_ratio'): Floor('<=', 0.267, 0.2589, '2026-12-01 static products'),
    ('transformer', 'minilm-gemm', 'qrs-static-mse', 'snr_db'): Floor('>=', 22, 22.5257, '2026-12-01 static products'),
    # The static target: at least 1.2x float in ORT.
    ('transformer', 'minilm-gemm', 'qrs-static-mse', 'speedup'): Floor('>=', 1.2, 2.633, '2026-12-01 static products'),
    ('transformer', 'minilm-gemm', 'qrs-weight-only+emb', 'size_ratio'): Floor('<=', 0.263, 0.2545, '2026-11-30 transformer'),
    ('transformer', 'minilm-gemm', 'qrs-weight-only+emb', 'snr_db'): Floor('>=', 31.3, 31.9767, '2026-11-30 transformer'),
    ('transformer', 'minilm-gemm', 'qrs-weight-only+emb', 'speedup'): Floor('>=', 0.83, 0.9811, '2026-11-30 transformer'),
    ('transformer', 'minilm-gemm', 'qrs-weight-only+emb+data', 'size_ratio'): Floor('<=', 0.262, 0.2542, '2026-11-30 transformer'),
    ('transformer', 'minilm-gemm', 'qrs-weight-only+emb+data', 'snr_db'): Floor('>=', 33.4, 34.0852, '2026-11-30 transformer'),
    ('transformer', 'minilm-gemm', 'qrs-weight-only+emb+data', 'speedup'): Floor('>=', 0.83, 0.9818, '2026-11-30 transformer'),
    ('transformer', 'minilm-matmul', 'qrs-dynamic', 'size_ratio'): Floor('<=', 0.266, 0.2573, '2026-12-01 probe'),
    ('transformer', 'minilm-matmul', 'qrs-dynamic', 'snr_db'): Floor('>=', 22.9, 23.3999, '2026-12-01 probe'),
    ('transformer', 'minilm-matmul', 'qrs-dynamic', 'speed_vs_ort'): Floor('>=', 0.9, 0.9685, '2026-12-01 probe'),
    ('transformer', 'minilm-matmul', 'qrs-dynamic', 'speedup'): Floor('>=', 1, 2.8156, '2026-11-30 transformer'),
    ('transformer', 'minilm-matmul', 'qrs-dynamic+data', 'size_ratio'): Floor('<=', 0.266, 0.2576, '2026-12-01 static products'),
    ('transformer', 'minilm-matmul', 'qrs-dynamic+data', 'snr_db'): Floor('>=', 25, 25.5514, '2026-11-30 transformer'),
    ('transformer', 'minilm-matmul', 'qrs-dynamic+data', 'speed_vs_ort'): Floor('>=', 0.9, 1.0413, '2026-11-30 transformer'),
    ('transformer', 'minilm-matmul', 'qrs-dynamic+data', 'speedup'): Floor('>=', 1, 2.4596, '2026-11-30 transformer'),
    ('transformer', 'minilm-matmul', 'qrs-static-mse', 'size_ratio'): Floor('<=', 0.266, 0.2575, '2026-12-01 static products'),
    ('transformer', 'minilm-matmul', 'qrs-static-mse', 'snr_db'): Floor('>=', 21.9, 22.4039, '2026-12-01 static products'),
    # The static target: at least 1.2x float in ORT.
    ('transformer', 'minilm-matmul', 'qrs-static-mse', 'speedup'): Floor('>=', 1.2, 2.296, '2026-12-01 static products'),
    ('transformer', 'minilm-matmul', 'qrs-weight-only+emb', 'size_ratio'): Floor('<=', 0.263, 0.2544, '2026-11-30 transformer'),
    ('transformer', 'minilm-matmul', 'qrs-weight-only+emb', 'snr_db'): Floor('>=', 28.8, 29.3907, '2026-11-30 transformer'),
    ('transformer', 'minilm-matmul', 'qrs-weight-only+emb', 'speedup'): Floor('>=', 1, 1.2668, '2026-11-30 transformer'),
    ('transformer', 'minilm-matmul', 'qrs-weight-only+emb+data', 'size_ratio'): Floor('<=', 0.262, 0.2541, '2026-11-30 transformer'),
    ('transformer', 'minilm-matmul', 'qrs-weight-only+emb+data', 'snr_db'): Floor('>=', 29.7, 30.3596, '2026-11-30 transformer'),
    ('transformer', 'minilm-matmul', 'qrs-weight-only+emb+data', 'speedup'): Floor('>=', 1, 1.2695, '2026-11-30 transformer'),
    ('static', 'cls', 'entropy', 'calib_vs_ort'): Floor('<=', 1.1, 0.3831, '2026-11-30'),
    ('static', 'cls', 'entropy', 'dq'): Floor('>=', 171, 171, '2026-12-01 static products'),
    ('static', 'cls', 'entropy', 'ort_int_kernels'): Floor('>=', 55, 55, '2026-12-01 static products'),
    ('static', 'cls', 'entropy', 'peak_mb'): Floor('<=', 500, 55.707, '2026-11-30'),
    ('static', 'cls', 'entropy', 'q'): Floor('>=', 90, 90, '2026-12-01 static products'),
    ('static', 'cls', 'entropy', 'size_ratio'): Floor('<=', 0.404, 0.3919, '2026-11-30'),
    ('static', 'cls', 'entropy', 'snr_db'): Floor('>=', 16.8, 17.22, '2026-11-30'),
    ('static', 'cls', 'entropy', 'speed_vs_ort'): Floor('>=', 0.9, 1.7106, '2026-11-30'),
    ('static', 'cls', 'entropy', 'speedup'): Floor('>=', 0.61, 0.7266, '2026-11-30'),
    ('static', 'cls', 'entropy', 'task'): Floor('>=', 0.88, 0.9167, '2026-11-30'),
    ('static', 'cls', 'minmax', 'calib_vs_ort'): Floor('<=', 1.1, 0.2014, '2026-11-30'),
    ('static', 'cls', 'minmax', 'dq'): Floor('>=', 187, 187, '2026-12-01 static products'),
    ('static', 'cls', 'minmax', 'ort_int_kernels'): Floor('>=', 55, 55, '2026-12-01 static products'),
    ('static', 'cls', 'minmax', 'peak_mb'): Floor('<=', 500, 55.7617, '2026-11-30'),
    ('static', 'cls', 'minmax', 'q'): Floor('>=', 90, 90, '2026-12-01 static products'),
    ('static', 'cls', 'minmax', 'size_ratio'): Floor('<=', 0.427, 0.4138, '2026-11-30'),
    ('static', 'cls', 'minmax', 'snr_db'): Floor('>=', 15.5, 15.91, '2026-11-30'),
    ('static', 'cls', 'minmax', 'speed_vs_ort'): Floor('>=', 0.9, 1.6781, '2026-11-30'),
    ('static', 'cls', 'minmax', 'speedup'): Floor('>=', 0.63, 0.743, '2026-11-30'),
    ('static', 'cls', 'minmax', 'task'): Floor('>=', 0.72, 0.75, '2026-11-30'),
    ('static', 'cls', 'mse', 'calib_vs_ort'): Floor('<=', 1.1, 0.2197, '2026-11-30'),
    ('static', 'cls', 'mse', 'dq'): Floor('>=', 171, 171, '2026-12-01 static products'),
    ('static', 'cls', 'mse', 'ort_int_kernels'): Floor('>=', 55, 55, '2026-12-01 static products'),
    ('static', 'cls', 'mse', 'peak_mb'): Floor('<=', 500, 55.3516, '2026-11-30'),
    ('static', 'cls', 'mse', 'q'): Floor('>=', 90, 90, '2026-12-01 static products'),
    ('static', 'cls', 'mse', 'size_ratio'): Floor('<=', 0.404, 0.3919, '2026-11-30'),
    ('static', 'cls', 'mse', 'snr_db'): Floor('>=', 14.9, 15.27, '2026-11-30'),
    ('static', 'cls', 'mse', 'speed_vs_ort'): Floor('>=', 0.9, 1.7597, '2026-11-30'),
    ('static', 'cls', 'mse', 'speedup'): Floor('>=', 0.66, 0.7785, '2026-11-30'),
    ('static', 'cls', 'mse', 'task'): Floor('>=', 0.88, 0.9167, '2026-11-30 scheme'),
    ('static', 'cls', 'percentile', 'calib_vs_ort'): Floor('<=', 1.1, 0.1963, '2026-11-30'),
    ('static', 'cls', 'percentile', 'dq'): Floor('>=', 171, 171, '2026-12-01 static products'),
    ('static', 'cls', 'percentile', 'ort_int_kernels'): Floor('>=', 55, 55, '2026-12-01 static products'),
    ('static', 'cls', 'percentile', 'peak_mb'): Floor('<=', 500, 55.7383, '2026-11-30'),
    ('static', 'cls', 'percentile', 'q'): Floor('>=', 90, 90, '2026-12-01 static products'),
    ('static', 'cls', 'percentile', 'size_ratio'): Floor('<=', 0.404, 0.3919, '2026-11-30'),
    ('static', 'cls', 'percentile', 'snr_db'): Floor('>=', 14.9, 15.2124, '2026-11-30'),
    ('static', 'cls', 'percentile', 'speed_vs_ort'): Floor('>=', 0.9, 1.6841, '2026-11-30'),
    ('static', 'cls', 'percentile', 'speedup'): Floor('>=', 0.66, 0.7802, '2026-11-30'),
    ('static', 'cls', 'percentile', 'task'): Floor('>=', 0.88, 0.9167, '2026-11-30'),
    # det calibration / ORT MinMax's raised from 1.1 to 1.45 (worst x 1.1 rounded up, the rule
    # for these exceptions): on an idle machine (the cold-clone
    # .ci/run of 315d77e, 18:15, nothing else running) ours took 4.55-4.75 s against ORT's
    # 3.73 s (1.22-1.27x, three runs each, low spread); the 0.84-0.98 it was set from was
    # measured under load, which slows ORT's multi-threaded run more than ours. Not a regression:
    # landed main 5965e64 takes the same 4.7 s here back to back. The claim "at most ORT's time"
    # does not hold for det on this CPU (AVX-512 VNNI, where ORT's float inference is fast).
    ('static', 'det', 'entropy', 'calib_vs_ort'): Floor('<=', 1.45, 1.2750, '2026-11-30 idle'),
    ('static', 'det', 'entropy', 'dq'): Floor('>=', 220, 220, '2026-11-30'),
    ('static', 'det', 'entropy', 'ort_int_kernels'): Floor('>=', 71, 71, '2026-11-30'),
    ('static', 'det', 'entropy', 'peak_mb'): Floor('<=', 500, 420.2812, '2026-11-30'),
    ('static', 'det', 'entropy', 'q'): Floor('>=', 106, 106, '2026-11-30'),
    ('static', 'det', 'entropy', 'size_ratio'): Floor('<=', 0.292, 0.2834, '2026-11-30'),
    ('static', 'det', 'entropy', 'snr_db'): Floor('>=', 4, 4.36, '2026-11-30'),
    ('static', 'det', 'entropy', 'speed_vs_ort'): Floor('>=', 0.9, 1.1221, '2026-11-30'),
    ('static', 'det', 'entropy', 'speedup'): Floor('>=', 1, 1.4711, '2026-11-30'),
    ('static', 'det', 'entropy', 'task'): Floor('>=', 0.64, 0.6738, '2026-11-30'),
    ('static', 'det', 'minmax', 'calib_vs_ort'): Floor('<=', 1.45, 1.2743, '2026-11-30 idle'),
    ('static', 'det', 'minmax', 'dq'): Floor('>=', 228, 228, '2026-11-30'),
    ('static', 'det', 'minmax', 'ort_int_kernels'): Floor('>=', 71, 71, '2026-11-30'),
    ('static', 'det', 'minmax', 'peak_mb'): Floor('<=', 500, 416.375, '2026-11-30'),
    ('static', 'det', 'minmax', 'q'): Floor('>=', 106, 106, '2026-11-30'),
    ('static', 'det', 'minmax', 'size_ratio'): Floor('<=', 0.294, 0.2847, '2026-11-30'),
    ('static', 'det', 'minmax', 'snr_db'): Floor('>=', 4.3, 4.61, '2026-11-30'),
    ('static', 'det', 'minmax', 'speed_vs_ort'): Floor('>=', 0.9, 1.0274, '2026-11-30'),
    ('static', 'det', 'minmax', 'speedup'): Floor('>=', 1, 1.412, '2026-11-30'),
    ('static', 'det', 'minmax', 'task'): Floor('>=', 0.66, 0.696, '2026-11-30'),
    ('static', 'det', 'mse', 'calib_vs_ort'): Floor('<=', 1.45, 1.2189, '2026-11-30 idle'),
    ('static', 'det', 'mse', 'dq'): Floor('>=', 220, 220, '2026-11-30'),
    ('static', 'det', 'mse', 'ort_int_kernels'): Floor('>=', 71, 71, '2026-11-30'),
    ('static', 'det', 'mse', 'peak_mb'): Floor('<=', 500, 418.2852, '2026-11-30'),
    ('static', 'det', 'mse', 'q'): Floor('>=', 106, 106, '2026-11-30'),
    ('static', 'det', 'mse', 'size_ratio'): Floor('<=', 0.292, 0.2834, '2026-11-30'),
    ('static', 'det', 'mse', 'snr_db'): Floor('>=', 4.4, 4.7993, '2026-11-30'),
    ('static', 'det', 'mse', 'speed_vs_ort'): Floor('>=', 0.9, 1.1583, '2026-11-30'),
    ('static', 'det', 'mse', 'speedup'): Floor('>=', 1, 1.6032, '2026-11-30'),
    ('static', 'det', 'mse', 'task'): Floor('>=', 0.67, 0.7066, '2026-11-30'),
    ('static', 'det', 'percentile', 'calib_vs_ort'): Floor('<=', 1.45, 1.2206, '2026-11-30 idle'),
    ('static', 'det', 'percentile', 'dq'): Floor('>=', 219, 219, '2026-11-30'),
    ('static', 'det', 'percentile', 'ort_int_kernels'): Floor('>=', 71, 71, '2026-11-30'),
    ('static', 'det', 'percentile', 'peak_mb'): Floor('<=', 500, 420.2852, '2026-11-30'),
    ('static', 'det', 'percentile', 'q'): Floor('>=', 106, 106, '2026-11-30'),
    ('static', 'det', 'percentile', 'size_ratio'): Floor('<=', 0.292, 0.283, '2026-11-30'),
    ('static', 'det', 'percentile', 'snr_db'): Floor('>=', 3.9, 4.2493, '2026-11-30'),
    ('static', 'det', 'percentile', 'speed_vs_ort'): Floor('>=', 0.9, 1.1566, '2026-11-30'),
    ('static', 'det', 'percentile', 'speedup'): Floor('>=', 1, 1.5483, '2026-11-30'),
    ('static', 'det', 'percentile', 'task'): Floor('>=', 0.63, 0.664, '2026-11-30'),
    ('static', 'rec', 'entropy', 'calib_vs_ort'): Floor('<=', 1.1, 0.6273, '2026-11-30'),
    ('static', 'rec', 'entropy', 'dq'): Floor('>=', 161, 161, '2026-12-01 static products'),
    ('static', 'rec', 'entropy', 'ort_int_kernels'): Floor('>=', 47, 47, '2026-12-01 static products'),
    ('static', 'rec', 'entropy', 'peak_mb'): Floor('<=', 500, 243.1562, '2026-11-30'),
    ('static', 'rec', 'entropy', 'q'): Floor('>=', 82, 82, '2026-12-01 static products'),
    ('static', 'rec', 'entropy', 'size_ratio'): Floor('<=', 0.281, 0.2724, '2026-11-30'),
    ('static', 'rec', 'entropy', 'snr_db'): Floor('>=', 8.9, 9.2575, '2026-11-30 scheme'),
    ('static', 'rec', 'entropy', 'speed_vs_ort'): Floor('>=', 0.9, 1.6894, '2026-11-30'),
    ('static', 'rec', 'entropy', 'speedup'): Floor('>=', 1, 1.5943, '2026-11-30'),
    ('static', 'rec', 'entropy', 'task'): Floor('>=', 0.9, 0.935, '2026-11-30'),
    ('static', 'rec', 'minmax', 'calib_vs_ort'): Floor('<=', 1.1, 0.5234, '2026-11-30'),
    ('static', 'rec', 'minmax', 'dq'): Floor('>=', 161, 161, '2026-12-01 static products'),
    ('static', 'rec', 'minmax', 'ort_int_kernels'): Floor('>=', 47, 47, '2026-12-01 static products'),
    ('static', 'rec', 'minmax', 'peak_mb'): Floor('<=', 500, 246.1562, '2026-11-30'),
    ('static', 'rec', 'minmax', 'q'): Floor('>=', 82, 82, '2026-12-01 static products'),
    ('static', 'rec', 'minmax', 'size_ratio'): Floor('<=', 0.281, 0.2724, '2026-11-30'),
    ('static', 'rec', 'minmax', 'snr_db'): Floor('>=', 10.1, 10.49, '2026-11-30'),
    ('static', 'rec', 'minmax', 'speed_vs_ort'): Floor('>=', 0.9, 1.6576, '2026-11-30'),
    ('static', 'rec', 'minmax', 'speedup'): Floor('>=', 1, 2.011, '2026-11-30'),
    ('static', 'rec', 'minmax', 'task'): Floor('>=', 0.9, 0.9396, '2026-11-30'),
    ('static', 'rec', 'mse', 'calib_vs_ort'): Floor('<=', 1.1, 0.5227, '2026-11-30'),
    ('static', 'rec', 'mse', 'dq'): Floor('>=', 161, 161, '2026-12-01 static products'),
    ('static', 'rec', 'mse', 'ort_int_kernels'): Floor('>=', 47, 47, '2026-12-01 static products'),
    ('static', 'rec', 'mse', 'peak_mb'): Floor('<=', 500, 240.6562, '2026-11-30'),
    ('static', 'rec', 'mse', 'q'): Floor('>=', 82, 82, '2026-12-01 static products'),
    ('static', 'rec', 'mse', 'size_ratio'): Floor('<=', 0.281, 0.2724, '2026-11-30'),
    ('static', 'rec', 'mse', 'snr_db'): Floor('>=', 9.3, 9.6982, '2026-11-30 scheme'),
    ('static', 'rec', 'mse', 'speed_vs_ort'): Floor('>=', 0.9, 1.6452, '2026-11-30'),
    ('static', 'rec', 'mse', 'speedup'): Floor('>=', 1, 1.9298, '2026-11-30'),
    ('static', 'rec', 'mse', 'task'): Floor('>=', 0.91, 0.94, '2026-11-30'),
    ('static', 'rec', 'percentile', 'calib_vs_ort'): Floor('<=', 1.1, 0.5218, '2026-11-30'),
    ('static', 'rec', 'percentile', 'dq'): Floor('>=', 161, 161, '2026-12-01 static products'),
    ('static', 'rec', 'percentile', 'ort_int_kernels'): Floor('>=', 47, 47, '2026-12-01 static products'),
    ('static', 'rec', 'percentile', 'peak_mb'): Floor('<=', 500, 242.5156, '2026-11-30'),
    ('static', 'rec', 'percentile', 'q'): Floor('>=', 82, 82, '2026-12-01 static products'),
    ('static', 'rec', 'percentile', 'size_ratio'): Floor('<=', 0.281, 0.2724, '2026-11-30'),
    ('static', 'rec', 'percentile', 'snr_db'): Floor('>=', 9, 9.3, '2026-11-30'),
    ('static', 'rec', 'percentile', 'speed_vs_ort'): Floor('>=', 0.9, 1.6708, '2026-11-30'),
    ('static', 'rec', 'percentile', 'speedup'): Floor('>=', 1, 2.0066, '2026-11-30'),
    ('static', 'rec', 'percentile', 'task'): Floor('>=', 0.9, 0.9375, '2026-11-30'),
    # Exception to the 1.1 claim: YOLOv8's entropy/MSE searches over ~200 activations make these runs
    # 0.97-1.12x ORT MinMax's (3 runs, under load), so 1.1 would fail at random. BENCHMARKS says so.
    # Raised 1.25 -> 1.35 (2026-12-01): two runs measured 1.267 (cold-clone CI of c9ebae5) and 1.292
    # (under load), while our own time did not change: `calibrate yolo --method entropy` takes
    # 2.19-2.24 s with this session's binary and 2.21-2.45 s with 4aaf9a5's, same machine, same
    # minute; ORT's MinMax run was the faster side in those runs.
    ('static', 'yolo', 'entropy', 'calib_vs_ort'): Floor('<=', 1.35, 1.292, '2026-11-30'),
    ('static', 'yolo', 'entropy', 'dq'): Floor('>=', 347, 347, '2026-11-30'),
    ('static', 'yolo', 'entropy', 'ort_int_kernels'): Floor('>=', 199, 199, '2026-11-30'),
    ('static', 'yolo', 'entropy', 'peak_mb'): Floor('<=', 500, 315.8711, '2026-11-30'),
    ('static', 'yolo', 'entropy', 'q'): Floor('>=', 221, 221, '2026-11-30'),
    ('static', 'yolo', 'entropy', 'size_ratio'): Floor('<=', 0.284, 0.2754, '2026-11-30'),
    ('static', 'yolo', 'entropy', 'snr_db'): Floor('>=', 32.5, 33.26, '2026-11-30'),
    ('static', 'yolo', 'entropy', 'speed_vs_ort'): Floor('>=', 0.9, 1.0423, '2026-11-30'),
    ('static', 'yolo', 'entropy', 'speedup'): Floor('>=', 1, 1.7049, '2026-11-30'),
    ('static', 'yolo', 'entropy', 'task'): Floor('>=', 0.67, 0.707, '2026-11-30'),
    # yolo minmax/percentile raised 1.1 -> 1.2 like mse: idle they measured 1.05 and 1.00x, a 5-10%
    # margin on a VM whose timings moved 50% under load.
    ('static', 'yolo', 'minmax', 'calib_vs_ort'): Floor('<=', 1.2, 1.0541, '2026-11-30 idle'),
    ('static', 'yolo', 'minmax', 'dq'): Floor('>=', 347, 347, '2026-11-30'),
    ('static', 'yolo', 'minmax', 'ort_int_kernels'): Floor('>=', 199, 199, '2026-11-30'),
    ('static', 'yolo', 'minmax', 'peak_mb'): Floor('<=', 500, 315.8477, '2026-11-30'),
    ('static', 'yolo', 'minmax', 'q'): Floor('>=', 221, 221, '2026-11-30'),
    ('static', 'yolo', 'minmax', 'size_ratio'): Floor('<=', 0.284, 0.2754, '2026-11-30'),
    ('static', 'yolo', 'minmax', 'snr_db'): Floor('>=', 22.8, 23.3447, '2026-11-30'),
    ('static', 'yolo', 'minmax', 'speed_vs_ort'): Floor('>=', 0.9, 1.045, '2026-11-30'),
    ('static', 'yolo', 'minmax', 'speedup'): Floor('>=', 1, 1.7624, '2026-11-30'),
    ('static', 'yolo', 'minmax', 'task'): Floor('>=', 0.75, 0.787, '2026-11-30'),
    # Exception to the 1.1 claim: YOLOv8's entropy/MSE searches over ~200 activations make these runs
    # 0.97-1.12x ORT MinMax's (3 runs, under load), so 1.1 would fail at random. BENCHMARKS says so.
    ('static', 'yolo', 'mse', 'calib_vs_ort'): Floor('<=', 1.2, 1.0887, '2026-11-30'),
    ('static', 'yolo', 'mse', 'dq'): Floor('>=', 347, 347, '2026-11-30'),
    ('static', 'yolo', 'mse', 'ort_int_kernels'): Floor('>=', 199, 199, '2026-11-30'),
    ('static', 'yolo', 'mse', 'peak_mb'): Floor('<=', 500, 316.3086, '2026-11-30'),
    ('static', 'yolo', 'mse', 'q'): Floor('>=', 221, 221, '2026-11-30'),
    ('static', 'yolo', 'mse', 'size_ratio'): Floor('<=', 0.284, 0.2754, '2026-11-30'),
    # Lowered from 32.5: on this machine (AVX-512 VNNI) landed main 5965e64 and the restructured
    # engine write byte-identical yolo mse models (cmp), at 27.11 dB (the same with ORT's fusions
    # off), so the restructuring did not cost it. The 33.54 dB of b22e063 was measured on a CPU
    # without VNNI; whether the CPU (calibration runs tract, whose kernels differ by CPU) or a
    # commit between b22e063 and 5965e64 moved it is not known yet: the fidelity issue owns it.
    # 27.11 - 2%.
    ('static', 'yolo', 'mse', 'snr_db'): Floor('>=', 26.5, 27.1118, '2026-11-30'),
    ('static', 'yolo', 'mse', 'speed_vs_ort'): Floor('>=', 0.9, 1.0311, '2026-11-30'),
    ('static', 'yolo', 'mse', 'speedup'): Floor('>=', 1, 1.7516, '2026-11-30'),
    ('static', 'yolo', 'mse', 'task'): Floor('>=', 0.67, 0.707, '2026-11-30'),
    ('static', 'yolo', 'percentile', 'calib_vs_ort'): Floor('<=', 1.2, 1.0029, '2026-11-30 idle'),
    ('static', 'yolo', 'percentile', 'dq'): Floor('>=', 347, 347, '2026-11-30'),
    ('static', 'yolo', 'percentile', 'ort_int_kernels'): Floor('>=', 199, 199, '2026-11-30'),
    ('static', 'yolo', 'percentile', 'peak_mb'): Floor('<=', 500, 315.9062, '2026-11-30'),
    ('static', 'yolo', 'percentile', 'q'): Floor('>=', 221, 221, '2026-11-30'),
    ('static', 'yolo', 'percentile', 'size_ratio'): Floor('<=', 0.284, 0.2754, '2026-11-30'),
    ('static', 'yolo', 'percentile', 'snr_db'): Floor('>=', 33.4, 34.09, '2026-11-30'),
    ('static', 'yolo', 'percentile', 'speed_vs_ort'): Floor('>=', 0.9, 1.0441, '2026-11-30'),
    ('static', 'yolo', 'percentile', 'speedup'): Floor('>=', 1, 1.76, '2026-11-30'),
    ('static', 'yolo', 'percentile', 'task'): Floor('>=', 0.63, 0.667, '2026-11-30'),
    ('weights', 'cls', 'int4-blocked32', 'dq'): Floor('>=', 49, 49, '2026-11-30 scheme'),
    ('weights', 'cls', 'int4-blocked32', 'int_tensors'): Floor('>=', 98, 98, '2026-11-30 scheme'),
    ('weights', 'cls', 'int4-blocked32', 'peak_mb'): Floor('<=', 30, 14.5039, '2026-11-30 scheme'),
    ('weights', 'cls', 'int4-blocked32', 'size_ratio'): Floor('<=', 0.357, 0.3461, '2026-11-30 scheme'),
    ('weights', 'cls', 'int4-blocked32', 'snr_db'): Floor('>=', 10.8, 11.1332, '2026-11-30 scheme'),
    ('weights', 'cls', 'int4-blocked32', 'task'): Floor('>=', 0.8, 0.8333, '2026-11-30 scheme'),
    ('weights', 'cls', 'int4-blocked32', 'time_vs_ort'): Floor('<=', 1, 0.2052, '2026-11-30 scheme'),
    ('weights', 'cls', 'int4-native', 'dq'): Floor('>=', 49, 49, '2026-11-30 scheme'),
    ('weights', 'cls', 'int4-native', 'int_tensors'): Floor('>=', 98, 98, '2026-11-30 scheme'),
    ('weights', 'cls', 'int4-native', 'peak_mb'): Floor('<=', 30, 14.2969, '2026-11-30 scheme'),
    ('weights', 'cls', 'int4-native', 'size_ratio'): Floor('<=', 0.228, 0.2213, '2026-11-30 scheme'),
    ('weights', 'cls', 'int4-native', 'snr_db'): Floor('>=', 10.6, 10.9524, '2026-11-30 scheme'),
    ('weights', 'cls', 'int4-native', 'task'): Floor('>=', 0.88, 0.9167, '2026-11-30 scheme'),
    ('weights', 'cls', 'int4-native', 'time_vs_ort'): Floor('<=', 1, 0.1544, '2026-11-30 scheme'),
    ('weights', 'cls', 'int8-per-channel', 'dq'): Floor('>=', 49, 49, '2026-11-30 scheme'),
    ('weights', 'cls', 'int8-per-channel', 'int_tensors'): Floor('>=', 98, 98, '2026-11-30 scheme'),
    ('weights', 'cls', 'int8-per-channel', 'peak_mb'): Floor('<=', 30, 14.4453, '2026-11-30 scheme'),
    ('weights', 'cls', 'int8-per-channel', 'size_ratio'): Floor('<=', 0.34, 0.3297, '2026-11-30 scheme'),
    ('weights', 'cls', 'int8-per-channel', 'snr_db'): Floor('>=', 34.3, 35.0808, '2026-11-30 scheme'),
    ('weights', 'cls', 'int8-per-channel', 'task'): Floor('>=', 0.97, 1, '2026-11-30 scheme'),
    ('weights', 'cls', 'int8-per-channel', 'time_vs_ort'): Floor('<=', 1, 0.1928, '2026-11-30 scheme'),
    ('weights', 'cls', 'int8-per-tensor', 'dq'): Floor('>=', 49, 49, '2026-11-30 scheme'),
    ('weights', 'cls', 'int8-per-tensor', 'int_tensors'): Floor('>=', 95, 95, '2026-11-30 scheme'),
    ('weights', 'cls', 'int8-per-tensor', 'peak_mb'): Floor('<=', 30, 13.582, '2026-11-30 scheme'),
    ('weights', 'cls', 'int8-per-tensor', 'size_ratio'): Floor('<=', 0.395, 0.3829, '2026-11-30 scheme'),
    ('weights', 'cls', 'int8-per-tensor', 'snr_db'): Floor('>=', 30.4, 31.1193, '2026-11-30 scheme'),
    ('weights', 'cls', 'int8-per-tensor', 'task'): Floor('>=', 0.97, 1, '2026-11-30 scheme'),
    ('weights', 'cls', 'int8-per-tensor', 'time_vs_ort'): Floor('<=', 1, 0.0978, '2026-11-30 scheme'),
    ('weights', 'det', 'int4-blocked32', 'dq'): Floor('>=', 63, 63, '2026-11-30 scheme'),
    ('weights', 'det', 'int4-blocked32', 'int_tensors'): Floor('>=', 126, 126, '2026-11-30 scheme'),
    ('weights', 'det', 'int4-blocked32', 'peak_mb'): Floor('<=', 50, 27.6719, '2026-11-30 scheme'),
    ('weights', 'det', 'int4-blocked32', 'size_ratio'): Floor('<=', 0.314, 0.304, '2026-11-30 scheme'),
    ('weights', 'det', 'int4-blocked32', 'snr_db'): Floor('>=', 6, 6.3084, '2026-11-30 scheme'),
    ('weights', 'det', 'int4-blocked32', 'task'): Floor('>=', 0.75, 0.781, '2026-11-30 scheme'),
    ('weights', 'det', 'int4-blocked32', 'time_vs_ort'): Floor('<=', 1, 0.4216, '2026-11-30 scheme'),
    ('weights', 'det', 'int4-native', 'dq'): Floor('>=', 63, 63, '2026-11-30 scheme'),
    ('weights', 'det', 'int4-native', 'int_tensors'): Floor('>=', 126, 126, '2026-11-30 scheme'),
    ('weights', 'det', 'int4-native', 'peak_mb'): Floor('<=', 50, 27.293, '2026-11-30 scheme'),
    ('weights', 'det', 'int4-native', 'size_ratio'): Floor('<=', 0.154, 0.1486, '2026-11-30 scheme'),
    ('weights', 'det', 'int4-native', 'snr_db'): Floor('>=', 3.6, 3.9929, '2026-11-30 scheme'),
    ('weights', 'det', 'int4-native', 'task'): Floor('>=', 0.6, 0.6316, '2026-11-30 scheme'),
    ('weights', 'det', 'int4-native', 'time_vs_ort'): Floor('<=', 1, 0.3217, '2026-11-30 scheme'),
    ('weights', 'det', 'int8-per-channel', 'dq'): Floor('>=', 63, 63, '2026-11-30 scheme'),
    ('weights', 'det', 'int8-per-channel', 'int_tensors'): Floor('>=', 126, 126, '2026-11-30 scheme'),
    ('weights', 'det', 'int8-per-channel', 'peak_mb'): Floor('<=', 50, 27.0391, '2026-11-30 scheme'),
    ('weights', 'det', 'int8-per-channel', 'size_ratio'): Floor('<=', 0.281, 0.2721, '2026-11-30 scheme'),
    ('weights', 'det', 'int8-per-channel', 'snr_db'): Floor('>=', 25.9, 26.4974, '2026-11-30 scheme'),
    ('weights', 'det', 'int8-per-channel', 'task'): Floor('>=', 0.96, 0.9917, '2026-11-30 scheme'),
    ('weights', 'det', 'int8-per-channel', 'time_vs_ort'): Floor('<=', 1, 0.4027, '2026-11-30 scheme'),
    ('weights', 'det', 'int8-per-tensor', 'dq'): Floor('>=', 63, 63, '2026-11-30 scheme'),
    ('weights', 'det', 'int8-per-tensor', 'int_tensors'): Floor('>=', 120, 120, '2026-11-30 scheme'),
    ('weights', 'det', 'int8-per-tensor', 'peak_mb'): Floor('<=', 40, 22.8633, '2026-11-30 scheme'),
    ('weights', 'det', 'int8-per-tensor', 'size_ratio'): Floor('<=', 0.275, 0.2663, '2026-11-30 scheme'),
    ('weights', 'det', 'int8-per-tensor', 'snr_db'): Floor('>=', 11.7, 12.0326, '2026-11-30 scheme'),
    ('weights', 'det', 'int8-per-tensor', 'task'): Floor('>=', 0.89, 0.9245, '2026-11-30 scheme'),
    ('weights', 'det', 'int8-per-tensor', 'time_vs_ort'): Floor('<=', 1, 0.2282, '2026-11-30 scheme'),
    ('weights', 'rec', 'int4-blocked32', 'dq'): Floor('>=', 47, 47, '2026-11-30 scheme'),
    ('weights', 'rec', 'int4-blocked32', 'int_tensors'): Floor('>=', 94, 94, '2026-11-30 scheme'),
    ('weights', 'rec', 'int4-blocked32', 'peak_mb'): Floor('<=', 80, 49.4688, '2026-11-30 scheme'),
    ('weights', 'rec', 'int4-blocked32', 'size_ratio'): Floor('<=', 0.311, 0.3015, '2026-11-30 scheme'),
    ('weights', 'rec', 'int4-blocked32', 'snr_db'): Floor('>=', 8.1, 8.4232, '2026-11-30 scheme'),
    ('weights', 'rec', 'int4-blocked32', 'task'): Floor('>=', 0.87, 0.9042, '2026-11-30 scheme'),
    ('weights', 'rec', 'int4-blocked32', 'time_vs_ort'): Floor('<=', 1, 0.4879, '2026-11-30 scheme'),
    ('weights', 'rec', 'int4-native', 'dq'): Floor('>=', 47, 47, '2026-11-30 scheme'),
    ('weights', 'rec', 'int4-native', 'int_tensors'): Floor('>=', 94, 94, '2026-11-30 scheme'),
    ('weights', 'rec', 'int4-native', 'peak_mb'): Floor('<=', 80, 47.5117, '2026-11-30 scheme'),
    ('weights', 'rec', 'int4-native', 'size_ratio'): Floor('<=', 0.15, 0.1451, '2026-11-30 scheme'),
    ('weights', 'rec', 'int4-native', 'snr_db'): Floor('>=', 5.9, 6.2489, '2026-11-30 scheme'),
    ('weights', 'rec', 'int4-native', 'task'): Floor('>=', 0.82, 0.8542, '2026-11-30 scheme'),
    ('weights', 'rec', 'int4-native', 'time_vs_ort'): Floor('<=', 1, 0.6493, '2026-11-30 scheme'),
    ('weights', 'rec', 'int8-per-channel', 'dq'): Floor('>=', 47, 47, '2026-11-30 scheme'),
    ('weights', 'rec', 'int8-per-channel', 'int_tensors'): Floor('>=', 94, 94, '2026-11-30 scheme'),
    ('weights', 'rec', 'int8-per-channel', 'peak_mb'): Floor('<=', 80, 47.832, '2026-11-30 scheme'),
    ('weights', 'rec', 'int8-per-channel', 'size_ratio'): Floor('<=', 0.277, 0.2688, '2026-11-30 scheme'),
    ('weights', 'rec', 'int8-per-channel', 'snr_db'): Floor('>=', 14.7, 15.0047, '2026-11-30 scheme'),
    ('weights', 'rec', 'int8-per-channel', 'task'): Floor('>=', 0.94, 0.9729, '2026-11-30 scheme'),
    ('weights', 'rec', 'int8-per-channel', 'time_vs_ort'): Floor('<=', 1, 0.3872, '2026-11-30 scheme'),
    ('weights', 'rec', 'int8-per-tensor', 'dq'): Floor('>=', 47, 47, '2026-11-30 scheme'),
    ('weights', 'rec', 'int8-per-tensor', 'int_tensors'): Floor('>=', 91, 91, '2026-11-30 scheme'),
    ('weights', 'rec', 'int8-per-tensor', 'peak_mb'): Floor('<=', 60, 37.793, '2026-11-30 scheme'),
    ('weights', 'rec', 'int8-per-tensor', 'size_ratio'): Floor('<=', 0.272, 0.2631, '2026-11-30 scheme'),
    ('weights', 'rec', 'int8-per-tensor', 'snr_db'): Floor('>=', 7, 7.3132, '2026-11-30 scheme'),
    ('weights', 'rec', 'int8-per-tensor', 'task'): Floor('>=', 0.85, 0.8854, '2026-11-30 scheme'),
    ('weights', 'rec', 'int8-per-tensor', 'time_vs_ort'): Floor('<=', 1, 0.2988, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int4-blocked32', 'dq'): Floor('>=', 63, 63, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int4-blocked32', 'int_tensors'): Floor('>=', 126, 126, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int4-blocked32', 'peak_mb'): Floor('<=', 60, 35.3672, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int4-blocked32', 'size_ratio'): Floor('<=', 0.308, 0.2987, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int4-blocked32', 'snr_db'): Floor('>=', 20.4, 20.882, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int4-blocked32', 'task'): Floor('>=', 0.57, 0.6042, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int4-blocked32', 'time_vs_ort'): Floor('<=', 1, 0.8715, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int4-native', 'dq'): Floor('>=', 63, 63, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int4-native', 'int_tensors'): Floor('>=', 126, 126, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int4-native', 'peak_mb'): Floor('<=', 60, 33.457, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int4-native', 'size_ratio'): Floor('<=', 0.143, 0.1384, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int4-native', 'snr_db'): Floor('>=', 19.7, 20.1372, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int4-native', 'task'): Floor('>=', 0.67, 0.7073, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int4-native', 'time_vs_ort'): Floor('<=', 1, 0.5856, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int8-per-channel', 'dq'): Floor('>=', 63, 63, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int8-per-channel', 'int_tensors'): Floor('>=', 126, 126, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int8-per-channel', 'peak_mb'): Floor('<=', 60, 33.4805, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int8-per-channel', 'size_ratio'): Floor('<=', 0.271, 0.2622, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int8-per-channel', 'snr_db'): Floor('>=', 48.5, 49.5745, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int8-per-channel', 'task'): Floor('>=', 0.97, 1, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int8-per-channel', 'time_vs_ort'): Floor('<=', 1, 0.593, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int8-per-tensor', 'dq'): Floor('>=', 63, 63, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int8-per-tensor', 'int_tensors'): Floor('>=', 124, 124, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int8-per-tensor', 'peak_mb'): Floor('<=', 50, 32.8359, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int8-per-tensor', 'size_ratio'): Floor('<=', 0.268, 0.2599, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int8-per-tensor', 'snr_db'): Floor('>=', 38.3, 39.1525, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int8-per-tensor', 'task'): Floor('>=', 0.87, 0.907, '2026-11-30 scheme'),
    ('weights', 'yolo', 'int8-per-tensor', 'time_vs_ort'): Floor('<=', 1, 0.5733, '2026-11-30 scheme'),
    # more_models.py: silero-vad (control flow, LSTM cells, fp16 export) and magika, synthetic inputs.
    ('more', 'magika', 'dynamic', 'size_ratio'): Floor('<=', 0.27, 0.2613, '2026-12-01 more'),
    ('more', 'magika', 'dynamic', 'snr_db'): Floor('>=', 75.4, 76.9534, '2026-12-01 more'),
    ('more', 'magika', 'int4-blocked32', 'size_ratio'): Floor('<=', 0.308, 0.2982, '2026-12-01 more'),
    ('more', 'magika', 'int4-blocked32', 'snr_db'): Floor('>=', 53.5, 54.6409, '2026-12-01 more'),
    ('more', 'magika', 'int8', 'size_ratio'): Floor('<=', 0.269, 0.2607, '2026-12-01 more'),
    ('more', 'magika', 'int8', 'snr_db'): Floor('>=', 79.3, 81.0159, '2026-12-01 more'),
    ('more', 'magika', 'static', 'size_ratio'): Floor('<=', 0.271, 0.2631, '2026-12-01 more'),
    ('more', 'magika', 'static', 'snr_db'): Floor('>=', 67.3, 68.7024, '2026-12-01 more'),
    ('more', 'vad', 'dynamic', 'size_ratio'): Floor('<=', 0.663, 0.6436, '2026-12-01 more'),
    ('more', 'vad', 'dynamic', 'snr_db'): Floor('>=', 24.7, 25.2709, '2026-12-01 more'),
    ('more', 'vad', 'int4-blocked32', 'size_ratio'): Floor('<=', 0.677, 0.657, '2026-12-01 more'),
    ('more', 'vad', 'int4-blocked32', 'snr_db'): Floor('>=', -6.6, -6.2762, '2026-12-01 more'),
    ('more', 'vad', 'int8', 'size_ratio'): Floor('<=', 0.663, 0.6436, '2026-12-01 more'),
    ('more', 'vad', 'int8', 'snr_db'): Floor('>=', 24.7, 25.2709, '2026-12-01 more'),
    ('more', 'vad-half', 'dynamic', 'size_ratio'): Floor('<=', 0.607, 0.589, '2026-12-01 more'),
    ('more', 'vad-half', 'dynamic', 'snr_db'): Floor('>=', 31.6, 32.3054, '2026-12-01 more'),
    ('more', 'vad-half', 'int4-blocked32', 'size_ratio'): Floor('<=', 0.621, 0.6026, '2026-12-01 more'),
    ('more', 'vad-half', 'int4-blocked32', 'snr_db'): Floor('>=', 5, 5.3836, '2026-12-01 more'),
    ('more', 'vad-half', 'int8', 'size_ratio'): Floor('<=', 0.607, 0.589, '2026-12-01 more'),
    ('more', 'vad-half', 'int8', 'snr_db'): Floor('>=', 31.6, 32.3054, '2026-12-01 more'),
    ('more', 'vad-ifless', 'dynamic', 'size_ratio'): Floor('<=', 0.449, 0.435, '2026-12-01 more'),
    ('more', 'vad-ifless', 'dynamic', 'snr_db'): Floor('>=', 9.4, 9.7591, '2026-12-01 more'),
    ('more', 'vad-ifless', 'int4-blocked32', 'size_ratio'): Floor('<=', 0.472, 0.4576, '2026-12-01 more'),
    ('more', 'vad-ifless', 'int4-blocked32', 'snr_db'): Floor('>=', 4.8, 5.1647, '2026-12-01 more'),
    ('more', 'vad-ifless', 'int8', 'size_ratio'): Floor('<=', 0.449, 0.4359, '2026-12-01 more'),
    ('more', 'vad-ifless', 'int8', 'snr_db'): Floor('>=', 8.8, 9.1737, '2026-12-01 more'),
    ('more', 'vad-op15', 'dynamic', 'size_ratio'): Floor('<=', 0.61, 0.5921, '2026-12-01 more'),
    ('more', 'vad-op15', 'dynamic', 'snr_db'): Floor('>=', 24.7, 25.2709, '2026-12-01 more'),
    ('more', 'vad-op15', 'int4-blocked32', 'size_ratio'): Floor('<=', 0.624, 0.6057, '2026-12-01 more'),
    ('more', 'vad-op15', 'int4-blocked32', 'snr_db'): Floor('>=', -6.6, -6.2762, '2026-12-01 more'),
    ('more', 'vad-op15', 'int8', 'size_ratio'): Floor('<=', 0.61, 0.5921, '2026-12-01 more'),
    ('more', 'vad-op15', 'int8', 'snr_db'): Floor('>=', 24.7, 25.2709, '2026-12-01 more'),
    ('more', 'vad-sequence', 'dynamic', 'size_ratio'): Floor('<=', 0.275, 0.2663, '2026-12-01 more'),
    ('more', 'vad-sequence', 'dynamic', 'snr_db'): Floor('>=', 27.5, 28.1535, '2026-12-01 more'),
    ('more', 'vad-sequence', 'int4-blocked32', 'size_ratio'): Floor('<=', 0.302, 0.2927, '2026-12-01 more'),
    ('more', 'vad-sequence', 'int4-blocked32', 'snr_db'): Floor('>=', 5.9, 6.2488, '2026-12-01 more'),
    ('more', 'vad-sequence', 'int8', 'size_ratio'): Floor('<=', 0.275, 0.2663, '2026-12-01 more'),
    ('more', 'vad-sequence', 'int8', 'snr_db'): Floor('>=', 27.5, 28.1535, '2026-12-01 more'),
}

METRICS: Dict[str, Dict[str, str]] = {
    "static": {"snr_db": ">=", "task": ">=", "size_ratio": "<=", "q": ">=", "dq": ">=", "ort_int_kernels": ">=",
               "peak_mb": "<=", "calib_vs_ort": "<=", "speed_vs_ort": ">=", "speedup": ">="},
    "weights": {"snr_db": ">=", "task": ">=", "size_ratio": "<=", "dq": ">=", "int_tensors": ">=",
                "peak_mb": "<=", "time_vs_ort": "<="},
    "transformer": {"snr_db": ">=", "size_ratio": "<=", "speedup": ">=", "speed_vs_ort": ">="},
    "more": {"snr_db": ">=", "size_ratio": "<="},
}
# Metrics only some rows have: gated where the row has them (transformer: speed_vs_ort of the
# dynamic rows, our speedup over ORT quantize_dynamic's).
OPTIONAL = {"transformer": ("speed_vs_ort",)}
# Metrics that need ONNX Runtime's quantizer in the same run: skipped (and said so) without it.
NEEDS_PEER = {"calib_vs_ort", "speed_vs_ort", "time_vs_ort"}


def check(script: str, model: str, config: str, values: Dict[str, Optional[float]], peer: bool) -> List[dict]:
    """One gate per metric of `script` for this row: {"gate", "value", "threshold", "pass"}."""
    gates = []
    for metric, op in METRICS[script].items():
        if metric in OPTIONAL.get(script, ()) and metric not in values:
            continue
        f = FLOORS.get((script, model, config, metric))
        g = {"model": model, "config": config, "metric": metric}
        if f is None:
            gates.append({**g, "gate": f"{metric}: no floor in scripts/floors.py", "value": values.get(metric),
                          "threshold": None, "pass": False})
            continue
        v = values.get(metric)
        if metric in NEEDS_PEER and not peer:
            gates.append({**g, "gate": f"{metric} {f.op} {f.limit} (skipped: no ORT row in this run)", "value": v,
                          "threshold": f.limit, "pass": True, "skipped": True})
            continue
        ok = v is not None and isinstance(v, (int, float)) and math.isfinite(v) and (
            v >= f.limit if f.op == ">=" else v <= f.limit)
        gates.append({**g, "gate": f"{metric} {f.op} {f.limit}", "value": v, "threshold": f.limit, "pass": ok})
    return gates


# ----------------------------------------------------------------------------------------------
# propose: entries from result files
# ----------------------------------------------------------------------------------------------


def _down(x: float, step: float) -> float:
    return math.floor(x / step + 1e-9) * step


def _up(x: float, step: float) -> float:
    return math.ceil(x / step - 1e-9) * step


def proposed_limit(metric: str, worst: float, script: str = "static") -> Tuple[float, str]:
    if metric == "snr_db":
        return round(_down(worst - max(0.3, 0.02 * abs(worst)), 0.1), 1), ""
    if metric == "task":
        return round(max(0.0, _down(worst - 0.03, 0.01)), 2), ""
    if metric == "size_ratio":
        return round(_up(worst * 1.03, 0.001), 3), ""
    if metric in ("q", "dq", "int_tensors", "ort_int_kernels"):
        return float(int(worst)), ""
    if metric == "speedup":
        return round(min(1.0, _down(worst * 0.85, 0.01)), 2), ""
    if metric == "peak_mb" and script == "weights":  # 15-45 MB: the 0.5 GB claim would gate nothing
        return min(PEAK_MB_MAX, round(_up(worst * 1.5, 10))), ""
    if metric == "peak_mb":
        return PEAK_MB_MAX, "" if worst <= PEAK_MB_MAX else "MEASURED ABOVE THE CLAIM"
    if metric == "calib_vs_ort":
        if worst * 1.1 <= CALIB_VS_ORT_MAX:
            return CALIB_VS_ORT_MAX, ""
        return round(_up(worst * 1.1, 0.05), 2), "the claim's 1.1 leaves under 10% for noise: EXCEPTION, say why"
    if metric == "time_vs_ort":
        return TIME_VS_ORT_MAX, "" if worst <= TIME_VS_ORT_MAX else "MEASURED ABOVE THE CLAIM"
    if metric == "speed_vs_ort":
        return SPEED_VS_ORT_MIN, "" if worst >= SPEED_VS_ORT_MIN else "MEASURED BELOW THE CLAIM"
    raise ValueError(metric)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) >= 1 else repr(round(x, 4))


def propose(script: str, files: List[Path], at: str) -> List[str]:
    seen: Dict[Tuple[str, str, str], List[float]] = {}
    for path in files:
        for row in json.loads(path.read_text())["rows"]:
            if row.get("kind") != "ours":
                continue
            for metric, v in (row.get("gate_values") or {}).items():
                if v is not None and metric in METRICS[script]:
                    seen.setdefault((row["model"], row["config"], metric), []).append(float(v))
    lines = []
    for (model, config, metric), vs in sorted(seen.items()):
        op = METRICS[script][metric]
        worst = min(vs) if op == ">=" else max(vs)
        limit, warn = proposed_limit(metric, worst, script)
        lines.append(f"    ({script!r}, {model!r}, {config!r}, {metric!r}): Floor({op!r}, {_fmt(limit)}, "
                     f"{_fmt(round(worst, 4))}, {at!r}),{'  # ' + warn if warn else ''}")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("show")
    rc = sub.add_parser("recheck")
    rc.add_argument("--static", type=Path)
    rc.add_argument("--weights", type=Path)
    rc.add_argument("--transformer", type=Path)
    rc.add_argument("--more", type=Path)
    rc.add_argument("--set", action="append", default=[], help="METRIC=LIMIT for every entry of METRIC")
    pr = sub.add_parser("propose")
    pr.add_argument("--at", required=True, help="the SOURCES key the new entries cite")
    pr.add_argument("--static", nargs="*", default=[], type=Path)
    pr.add_argument("--weights", nargs="*", default=[], type=Path)
    pr.add_argument("--transformer", nargs="*", default=[], type=Path)
    pr.add_argument("--more", nargs="*", default=[], type=Path)
    args = p.parse_args()
    if args.cmd == "show":
        for (script, model, config, metric), f in sorted(FLOORS.items()):
            print(f"{script:11} {model:13} {config:24} {metric:16} {f.op} {f.limit:<8g} measured {f.measured:<8g} "
                  f"at {f.at}")
        return 0
    if args.cmd == "recheck":
        for item in args.set:
            metric, limit = item.split("=")
            for k, f in list(FLOORS.items()):
                if k[3] == metric:
                    FLOORS[k] = f._replace(limit=float(limit))
        failed = 0
        for script, path in (("static", args.static), ("weights", args.weights), ("transformer", args.transformer),
                             ("more", args.more)):
            if path is None:
                continue
            for row in json.loads(path.read_text())["rows"]:
                if row.get("kind") != "ours" or not row.get("gate_values"):
                    continue
                peer = row.get("peer_in_run", script in ("weights", "transformer") and (
                    row["gate_values"].get("time_vs_ort") is not None or row["gate_values"].get("speed_vs_ort") is not None))
                for g in check(script, row["model"], row["config"], row["gate_values"], peer):
                    if not g["pass"]:
                        failed += 1
                        print(f"FAIL {script} {g['model']} {g['config']}: {g['gate']} (value {g['value']})")
        print(f"{failed} gate(s) failed")
        return 1 if failed else 0
    lines = propose("static", args.static, args.at) + propose("weights", args.weights, args.at)
    for line in lines + propose("transformer", args.transformer, args.at) + propose("more", args.more, args.at):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
