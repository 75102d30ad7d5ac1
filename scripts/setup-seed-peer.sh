#!/usr/bin/env bash
# Makes (once) a venv holding the published quantize-rs 0.10 (`quantization-rs==0.10.0` from
# PyPI), the peer of scripts/seed_peer_quantize.py, and prints its python. A venv of its own:
# this repository's Python package has the same distribution name.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${SEED_PEER_VENV:-target/seed-peer-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import quantize_rs" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --disable-pip-version-check -q "quantization-rs==0.10.0" numpy >&2
fi
echo "$(cd "$venv" && pwd)/bin/python"
