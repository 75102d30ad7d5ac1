#!/usr/bin/env python3
"""ort_peer_npz.py: onnxruntime's own quantizers on a multi-input model, with samples from an .npz.

The reference ("peer") rows of transformer.py. Run as a separate process so that its wall time
and peak RSS are measured the same way as the quantize-rs binary's (proc_measure.py).

    python scripts/ort_peer_npz.py dynamic IN.onnx OUT.onnx
    python scripts/ort_peer_npz.py static IN.onnx OUT.onnx --data CALIB.npz [--method minmax]

dynamic: quantize_dynamic(IN, OUT, per_channel=True, weight_type=QInt8), what ONNX Runtime's
documentation recommends for transformers.
static:  quantize_static(IN, OUT, reader, quant_format=QDQ, per_channel=True,
activation_type=QUInt8, weight_type=QInt8, calibrate_method=M): the configuration ORT documents
for x86 CPUs, every other option at its default (ORT's default op types, which include Add, Mul,
Gather, Softmax...). The reader yields one sample at a time: CALIB.npz holds one array per model
input, named after it, samples on axis 0 (the layout quantize-rs's --data takes); sample i is
{name: array[i:i+1]}. --data may also be a folder of such .npz files, read in name order (one
sentence each at its own length, say). --method is minmax, entropy or percentile (--percentile, default 99.999,
ORT's own default); --op-types limits op_types_to_quantize (e.g. MatMul,Gemm).
Prints one JSON line, {"ok": true} or {"ok": false, "error": "..."} (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["dynamic", "static"])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--data", help="static: .npz of calibration samples")
    p.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    p.add_argument("--percentile", type=float, default=99.999)
    p.add_argument("--op-types", default=None, help="static: op_types_to_quantize (comma list; default ORT's)")
    args = p.parse_args()
    try:
        import numpy as np
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_dynamic, quantize_static)

        if args.mode == "dynamic":
            quantize_dynamic(args.src, args.dst, per_channel=True, weight_type=QuantType.QInt8)
        else:
            if not args.data:
                raise SystemExit("static needs --data")
            from pathlib import Path

            files = sorted(Path(args.data).glob("*.npz")) if Path(args.data).is_dir() else [Path(args.data)]
            samples = []
            for path in files:
                with np.load(path) as z:
                    arrays = {k: z[k] for k in z.files}
                n = {a.shape[0] for a in arrays.values()}
                if len(n) != 1:
                    raise SystemExit(f"{path}: arrays disagree on the sample count: {sorted(n)}")
                samples += [{k: v[i:i + 1] for k, v in arrays.items()} for i in range(n.pop())]
            if not samples:
                raise SystemExit(f"{args.data}: no samples")

            class Reader(CalibrationDataReader):
                def __init__(self):
                    self.it = iter(samples)

                def get_next(self):
                    return next(self.it, None)

            method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                      "percentile": CalibrationMethod.Percentile}[args.method]
            extra = {"CalibPercentile": args.percentile} if args.method == "percentile" else {}
            kw = {"op_types_to_quantize": args.op_types.split(",")} if args.op_types else {}
            quantize_static(args.src, args.dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=method, extra_options=extra, **kw)
    except BaseException as e:  # noqa: BLE001 - any failure is reported as data
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}))
        return 1
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
