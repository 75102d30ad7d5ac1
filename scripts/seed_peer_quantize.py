#!/usr/bin/env python3
"""seed_peer_quantize.py: quantize a model with the published quantize-rs 0.10 (PyPI
`quantization-rs==0.10.0`, the project this one grew from), as a peer to compare with.

    PEER_PYTHON scripts/seed_peer_quantize.py IN.onnx OUT.onnx [--bits 4] [--per-tensor] [--native-int4]

PEER_PYTHON is the interpreter of a venv holding that package (scripts/setup-seed-peer.sh makes
one and prints its python); it cannot share a venv with this repository's package, which has the
same distribution name. Runs quantize_rs.quantize(IN, OUT, bits, per_channel, native_int4) with
its other arguments at their defaults (asymmetric weights, min_elements 0) and prints one JSON
line, {"ok": true} or {"ok": false, "error": "..."} (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--bits", type=int, default=8)
    p.add_argument("--per-tensor", action="store_true")
    p.add_argument("--native-int4", action="store_true")
    args = p.parse_args()
    try:
        import quantize_rs

        quantize_rs.quantize(args.src, args.dst, bits=args.bits, per_channel=not args.per_tensor,
                             native_int4=args.native_int4)
    except Exception as e:  # the peer's own error, reported as a failed row
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        return 1
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
