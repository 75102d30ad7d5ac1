#!/usr/bin/env bash
# setup-python.sh: create or refresh the Python environment used by the
# scripts in this folder (ort_compare.py, real_models.py, bench_quantize.py).
#
#   PY="$(scripts/setup-python.sh)"      # prints the venv's python on stdout
#   "$PY" scripts/ort_compare.py --help
#
# The venv lives at <repo>/.venv (python3 -m venv). It is (re)built when it is
# missing or broken, when its interpreter is not the current python3 (e.g. after
# a system upgrade), when scripts/requirements.txt changed since the last
# successful install (a stamp file in the venv holds its sha256), or when the
# installed versions no longer match the pins. When all is in order it costs
# one short Python start-up (~0.1 s), so tests can call it every time.
# Concurrent callers (e.g. parallel cargo tests) are serialised with flock.
#
# Only the python path goes to stdout; progress goes to stderr.
# Environment: PYTHON (interpreter to create the venv with, default python3),
# plus whatever pip honours (PIP_INDEX_URL, PIP_FIND_LINKS, ...).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
VENV="$ROOT/.venv"
REQ="$SCRIPT_DIR/requirements.txt"
STAMP="$VENV/.quantize-rs-requirements.sha256"
BASE_PY="${PYTHON:-python3}"
VPY="$VENV/bin/python"

log() { echo "setup-python: $*" >&2; }

# Exit 0 iff every `name==version` pin in requirements.txt is what is installed.
CHECK_PINS='
import sys
from importlib import metadata
bad = []
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if "==" not in line:
        continue
    name, want = (s.strip() for s in line.split("==", 1))
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have != want:
        bad.append("%s: want %s, have %s" % (name, want, have))
if bad:
    sys.stderr.write("setup-python: " + "; ".join(bad) + "\n")
    sys.exit(1)
'

req_hash() { sha256sum "$REQ" | cut -d' ' -f1; }

is_current() {
    [[ -x "$VPY" && -f "$STAMP" && "$(cat "$STAMP")" == "$(req_hash)" ]] || return 1
    "$VPY" -c "$CHECK_PINS" "$REQ" 2>/dev/null
}

if is_current; then
    echo "$VPY"
    exit 0
fi

# Serialise concurrent setups; re-check once we hold the lock.
mkdir -p "$ROOT/target"
exec 9>"$ROOT/target/.setup-python.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
    if is_current; then
        echo "$VPY"
        exit 0
    fi
fi

py_version() { "$1" -c 'import sys; print(sys.version)' 2>/dev/null; }
if [[ -d "$VENV" ]]; then
    have="$(py_version "$VPY" || true)"
    want="$(py_version "$BASE_PY")"
    if [[ -z "$have" || "$have" != "$want" ]]; then
        log "$VENV is broken or not made with $BASE_PY ($want); recreating"
        rm -rf "$VENV"
    fi
fi
if [[ ! -d "$VENV" ]]; then
    log "creating $VENV with $BASE_PY"
    "$BASE_PY" -m venv "$VENV" >&2
fi

rm -f "$STAMP"
log "installing pinned packages from $REQ"
"$VPY" -m pip install --disable-pip-version-check --quiet -r "$REQ" >&2
if ! "$VPY" -c "$CHECK_PINS" "$REQ"; then
    log "installed versions do not match $REQ"
    exit 1
fi
req_hash >"$STAMP"
log "ready"
echo "$VPY"
