#!/usr/bin/env bash
# Build-time figures for BENCHMARKS.md ("Build-time quantization"): no-op rebuilds with 0, 1 and
# 10 declared models, the cache across debug -> release, embedding a 50 MB model with
# include_quantized! vs include_bytes!, and quantizing / calibrating in a build script compiled at
# opt-level 0 vs 3.
#
#   quantize-build/bench/build_time.sh [REPO] [WORK] [SECTION...]
#
# SECTIONs (default: all): noop, embed, weights, calibration. `calibration` calibrates
# models/ppocr-cls.onnx on CALIB (default REPO/target/real-models/inputs/cls/calib, a folder of
# .npy files that scripts/real_models.py writes) in three consumer crates that differ only in
# their profile: no override (opt-level 0), `[profile.dev.build-override] opt-level = 3`, and
# `[profile.dev.package."*"] opt-level = 2` (this workspace's setting); it prints their compile
# time, the build script's warning, and the time of a build that reruns the job (fresh cache).
#
# REPO is the quantize-rs checkout (default: this script's repository), WORK a scratch folder
# (default /tmp/quantize-build-bench) that gets small consumer crates and their own target
# directory, so timings never wait on another build's lock. Needs hyperfine, GNU time, and a
# Python with numpy + onnx (PY, default REPO/.venv/bin/python) for the 50 MB model.
set -euo pipefail
REPO="$(cd "${1:-$(dirname "$0")/../..}" && pwd)"
WORK="${2:-/tmp/quantize-build-bench}"
shift $(( $# < 2 ? $# : 2 ))
SECTIONS="${*:-noop embed weights calibration}"
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
PY="${PY:-$REPO/.venv/bin/python}"
CALIB="${CALIB:-$REPO/target/real-models/inputs/cls/calib}"
export CARGO_TARGET_DIR="$WORK/target"
export CARGO_TERM_COLOR=never
mkdir -p "$WORK"

crate() { # crate NAME BUILD_DEPS(yes|tract|no) METADATA MAIN_RS
  local dir="$WORK/$1"
  mkdir -p "$dir/src"
  {
    printf '[package]\nname = "%s"\nversion = "0.1.0"\nedition = "2024"\nrust-version = "1.91"\npublish = false\n\n' "$1"
    printf '[workspace]\n\n%s\n\n[dependencies]\nquantize-rs = { path = "%s", default-features = false }\n' "$3" "$REPO"
    case "$2" in
      yes) printf '\n[build-dependencies]\nquantize-build = { path = "%s/quantize-build" }\n' "$REPO" ;;
      tract) printf '\n[build-dependencies]\nquantize-build = { path = "%s/quantize-build", features = ["tract"] }\n' "$REPO" ;;
    esac
  } > "$dir/Cargo.toml"
  if [ "$2" != no ]; then printf 'fn main() {\n    quantize_build::run()\n}\n' > "$dir/build.rs"; fi
  printf '%s\n' "$4" > "$dir/src/main.rs"
}

DIGITS="$REPO/examples/digits/models/digits.onnx"
one_model='[package.metadata.quantize.models.m0]
path = "'"$DIGITS"'"'
ten_models=""
for i in $(seq 0 9); do
  ten_models+='[package.metadata.quantize.models.m'$i']
path = "'"$DIGITS"'"
min-elements = '$((100 + i))'
'
done
use_ten=""
for i in $(seq 0 9); do use_ten+="static M$i: quantize_rs::EmbeddedModel = quantize_rs::include_quantized!(\"m$i\");"$'\n'; done
use_ten+='fn main() { println!("{}", [M0, M1, M2, M3, M4, M5, M6, M7, M8, M9].iter().map(|m| m.bytes.len()).sum::<usize>()); }'

if want noop; then
crate plain no "" "static M: &[u8] = include_bytes!(\"$DIGITS\");
fn main() { println!(\"{}\", M.len()); }"
crate one yes "$one_model" 'static M0: quantize_rs::EmbeddedModel = quantize_rs::include_quantized!("m0");
fn main() { println!("{}", M0.bytes.len()); }'
crate ten yes "$ten_models" "$use_ten"

echo "## first builds (compile dependencies, quantize)"
for c in plain one ten; do (cd "$WORK/$c" && cargo build -q && cargo build -q --release); done

echo "## cache: the release build script of 'one' (after its debug build)"
cat "$CARGO_TARGET_DIR"/release/build/one-*/output | grep quantize-build
cat "$CARGO_TARGET_DIR"/debug/build/one-*/output | grep quantize-build

echo "## no-op rebuild (nothing changed)"
for c in plain one ten; do
  (cd "$WORK/$c" && hyperfine -N --warmup 2 --runs 20 --style basic --export-markdown "$WORK/noop-$c.md" -n "$c" 'cargo build -q')
done

echo "## rebuild after editing src/main.rs (the build script must not rerun)"
for c in plain one ten; do
  (cd "$WORK/$c" && hyperfine --warmup 1 --runs 10 --style basic --prepare 'touch src/main.rs' -n "$c" 'cargo build -q')
done
ls -la --time-style=+%T "$CARGO_TARGET_DIR"/debug/build/ten-*/output

fi

BIG="$WORK/big.onnx"
if { want embed || want weights; } && [ ! -f "$BIG" ]; then
  "$PY" - "$BIG" <<'PYEOF'
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
w = np.random.default_rng(0).standard_normal((1024, 12288), dtype=np.float32)
g = helper.make_graph(
    [helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1024])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 12288])],
    [numpy_helper.from_array(w, "w")])
onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), sys.argv[1])
PYEOF
fi

if want embed; then
echo "## 50 MB model: include_quantized! vs include_bytes!"
# Weights excluded, so the embedded file is the 50 MB float model itself: both crates embed
# the same number of bytes.
crate big-quantized yes '[package.metadata.quantize.models.big]
path = "'"$BIG"'"
exclude = ["*"]
allow-empty = true' 'static BIG: quantize_rs::EmbeddedModel = quantize_rs::include_quantized!("big");
fn main() { println!("{}", BIG.bytes.len()); }'
crate big-bytes no "" "static BIG: &[u8] = include_bytes!(\"$BIG\");
fn main() { println!(\"{}\", BIG.len()); }"
for c in big-bytes big-quantized; do
  (cd "$WORK/$c" && cargo build -q && cargo run -q)
  (cd "$WORK/$c" && hyperfine --warmup 1 --runs 5 --style basic --prepare 'touch src/main.rs' -n "$c" 'cargo build -q')
  (cd "$WORK/$c" && touch src/main.rs && /usr/bin/time -f "$c: %e s wall, max RSS %M kB (largest process: rustc)" cargo build -q)
done

fi

if want weights; then
echo "## quantizing the 50 MB model (weight-only int8) in the build script: opt-level 0 vs 3"
for opt in 0 3; do
  crate "big-int8-o$opt" yes '[package.metadata.quantize.models.big]
path = "'"$BIG"'"

[profile.dev.build-override]
opt-level = '$opt 'static BIG: quantize_rs::EmbeddedModel = quantize_rs::include_quantized!("big");
fn main() { println!("{}", BIG.bytes.len()); }'
  # A fresh cache, so the job runs instead of hitting the other variant's entry.
  rm -rf "$CARGO_TARGET_DIR/quantize-cache"
  (cd "$WORK/big-int8-o$opt" && cargo build -q)
  grep "quantize-build: big" "$CARGO_TARGET_DIR"/debug/build/big-int8-o$opt-*/output
done
fi

if want calibration; then
echo "## calibrating PP-OCR cls in the build script: opt-level 0 vs 3"
if ! ls "$CALIB"/*.npy > /dev/null 2>&1; then
  echo "no .npy files in $CALIB: run scripts/real_models.py --models cls (or set CALIB to a folder of [1,3,48,192] float32 .npy files)" >&2
  exit 1
fi
cls_model='[package.metadata.quantize.models.cls]
path = "'"$REPO/models/ppocr-cls.onnx"'"
calibration = { data = "'"$CALIB"'", method = "entropy" }'
cls_main='static CLS: quantize_rs::EmbeddedModel = quantize_rs::include_quantized!("cls");
fn main() { println!("{}", CLS.bytes.len()); }'
declare -A profile=(
  [cls-o0]=''
  [cls-o3]='[profile.dev.build-override]
opt-level = 3'
  [cls-star2]='[profile.dev.package."*"]
opt-level = 2'
)
for c in cls-o0 cls-o3 cls-star2; do
  crate "$c" tract "$cls_model

${profile[$c]}" "$cls_main"
  rm -rf "$CARGO_TARGET_DIR/quantize-cache"
  echo "### $c: first build (compiles the build script's dependencies, then calibrates)"
  (cd "$WORK/$c" && /usr/bin/time -f "$c first build: %e s wall" cargo build 2>&1 | grep -E "warning: $c@|quantize-build|first build|error" || true)
  grep "quantize-build: cls" "$CARGO_TARGET_DIR"/debug/build/$c-*/output
  echo "### $c: rebuild that reruns the job (fresh cache, touched Cargo.toml)"
  (cd "$WORK/$c" && hyperfine --runs 3 --style basic --export-markdown "$WORK/calib-$c.md" -n "$c" \
    --prepare "rm -rf '$CARGO_TARGET_DIR/quantize-cache' && touch Cargo.toml" 'cargo build -q')
  grep "quantize-build: cls" "$CARGO_TARGET_DIR"/debug/build/$c-*/output
done
fi
