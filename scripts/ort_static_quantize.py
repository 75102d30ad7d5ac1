#!/usr/bin/env python3
"""ort_static_quantize.py: static (calibrated) quantization with onnxruntime's own quantizer.

The reference ("peer") rows of static_compare.py. Run as a separate process so that its wall
time and peak RSS are measured the same way as the quantize-rs binary's (proc_measure.py).

    python scripts/ort_static_quantize.py IN.onnx OUT.onnx --data DIR --method minmax

Runs onnxruntime.quantization.quantize_static(IN, OUT, reader, QuantFormat.QDQ,
per_channel=True, activation_type=QUInt8, weight_type=QInt8, calibrate_method=M) with a data
reader over the DIR/*.npy files (one sample each, name order, fed as the model's single input):
the configuration ORT's documentation recommends for x86 CPUs, with the same samples and range
method as the quantize-rs run it is compared with. --method is minmax, entropy or percentile
(ORT has no MSE method); --percentile sets ORT's `extra_options["CalibPercentile"]`.
Prints one JSON line, {"ok": true} or {"ok": false, "error": "..."} (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--data", required=True, help="folder of .npy samples")
    p.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    p.add_argument("--percentile", type=float, default=99.99)
    args = p.parse_args()
    try:
        import numpy as np
        import onnx
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)

        files = sorted(Path(args.data).glob("*.npy"))
        if not files:
            raise SystemExit(f"{args.data}: no .npy samples")
        input_name = onnx.load(args.src, load_external_data=False).graph.input[0].name

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.files = iter(files)

            def get_next(self):
                f = next(self.files, None)
                return None if f is None else {input_name: np.load(f)}

        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[args.method]
        extra = {"CalibPercentile": args.percentile} if args.method == "percentile" else {}
        quantize_static(args.src, args.dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=method, extra_options=extra)
    except BaseException as e:  # noqa: BLE001 - any failure is reported as data
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}))
        return 1
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
