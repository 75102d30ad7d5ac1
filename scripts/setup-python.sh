#!/usr/bin/env bash
# setup-python.sh: create or refresh the Python environment used by the
# scripts in this folder (ort_compare.py, real_models.py, bench_quantize.py).
#
#   PY="$(scripts/setup-python.sh)"      # prints the venv's python on stdout
#   "$PY" scripts/ort_compare.py --help
#
# The venv lives at <repo>/.venv. It is (re)built when it is missing, when its
# python does not run, or when scripts/requirements.txt changed since the last
# successful install (a stamp file in the venv holds the sha256 of
# requirements.txt plus the interpreter version). When nothing changed this
# takes a few milliseconds, so tests can call it every time. Concurrent callers
# (e.g. parallel cargo tests) are serialised with flock when it is available.
#
# Everything except the final python path goes to stderr.
# Environment: PYTHON (interpreter used to create the venv, default python3),
# plus whatever pip honours (PIP_INDEX_URL, PIP_FIND_LINKS, ...).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
VENV="$ROOT/.venv"
REQ="$SCRIPT_DIR/requirements.txt"
STAMP="$VENV/.quantize-rs-requirements.stamp"
BASE_PY="${PYTHON:-python3}"
VPY="$VENV/bin/python"

log() { echo "setup-python: $*" >&2; }

want_stamp() {
    local req_hash py_ver
    req_hash="$(sha256sum "$REQ" | cut -d' ' -f1)"
    py_ver="$("$BASE_PY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
    echo "$req_hash python-$py_ver"
}

is_current() {
    [[ -x "$VPY" && -f "$STAMP" ]] || return 1
    [[ "$(cat "$STAMP")" == "$(want_stamp)" ]] || return 1
    "$VPY" -c 'import sys' >/dev/null 2>&1
}

# Fast path, no lock needed.
if is_current; then
    echo "$VPY"
    exit 0
fi

# Serialise concurrent setups.
if command -v flock >/dev/null 2>&1; then
    mkdir -p "$ROOT/target"
    exec 9>"$ROOT/target/.setup-python.lock"
    flock 9
    if is_current; then   # someone else finished it while we waited
        echo "$VPY"
        exit 0
    fi
fi

if [[ -d "$VENV" ]] && ! "$VPY" -c 'import sys' >/dev/null 2>&1; then
    log "existing $VENV is broken; recreating"
    rm -rf "$VENV"
fi
if [[ -d "$VENV" && -f "$STAMP" ]]; then
    old_py="$(cut -d' ' -f2 "$STAMP")"
    new_py="$(want_stamp | cut -d' ' -f2)"
    if [[ "$old_py" != "$new_py" ]]; then
        log "interpreter changed ($old_py -> $new_py); recreating $VENV"
        rm -rf "$VENV"
    fi
fi
if [[ ! -d "$VENV" ]]; then
    log "creating $VENV with $BASE_PY"
    "$BASE_PY" -m venv "$VENV" >&2
fi

rm -f "$STAMP"
log "installing $(grep -cv '^\s*\(#\|$\)' "$REQ") pinned packages from $REQ"
"$VPY" -m pip install --disable-pip-version-check --quiet -r "$REQ" >&2

# Check that what is installed is exactly what is pinned.
"$VPY" - "$REQ" >&2 <<'PYEOF'
import sys
from importlib import metadata
bad = []
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line or "==" not in line:
        continue
    name, ver = (s.strip() for s in line.split("==", 1))
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have != ver:
        bad.append(f"{name}: want {ver}, have {have}")
if bad:
    sys.exit("setup-python: version mismatch after install: " + "; ".join(bad))
PYEOF

want_stamp >"$STAMP"
log "ready"
echo "$VPY"
