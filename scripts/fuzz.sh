#!/usr/bin/env bash
# fuzz.sh [SECONDS]: runs each fuzz target (fuzz/fuzz_targets/) for SECONDS (default 60), one
# after another, with cargo-fuzz on the nightly toolchain, from seeds that scripts/fuzz_seeds.py
# writes, with debug assertions (and so overflow checks) on. Installs cargo-fuzz from crates.io when missing; without a nightly toolchain it says so
# and exits 0. Exits 1 when a target found a crash (its input is in fuzz/artifacts/<target>/).
#
#   scripts/fuzz.sh 600                      # ten minutes per target
#   FUZZ_TARGETS="data config" scripts/fuzz.sh 30
#   FUZZ_SANITIZER=none FUZZ_PROFILE=dev scripts/fuzz.sh 30   # builds in half the time (CI)
#
# New inputs that reach new code are kept in fuzz/corpus/<target>/ (not committed). A crash
# found here becomes a regression case: minimise it (`cargo +nightly fuzz tmin <target> <file>`),
# copy it to cargo-quantize/tests/fuzz-cases/<target>/, fix the bug; the normal test suite
# replays every case (cargo-quantize/tests/fuzz_regressions.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
targets="${FUZZ_TARGETS:-model data config external}"
flags=("--${FUZZ_PROFILE:-release}" --debug-assertions --sanitizer "${FUZZ_SANITIZER:-address}")

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain (rustup toolchain install nightly); fuzzing skipped"
  exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

python3 scripts/fuzz_seeds.py fuzz/seeds
start=$(date +%s)
cargo +nightly fuzz build "${flags[@]}"
echo "fuzz: targets built in $(( $(date +%s) - start )) s"

mkdir -p fuzz/logs
failed=()
for t in $targets; do
  mkdir -p "fuzz/corpus/$t"
  log="fuzz/logs/$t.log"
  t0=$(date +%s)
  # 2 GB of memory and 30 s per input: an allocation or a run past either is a finding.
  if cargo +nightly fuzz run "${flags[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=CRASH
    failed+=("$t")
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  echo "fuzz: $t: $status, $(( $(date +%s) - t0 )) s, ${execs:-?} executions, corpus $(ls "fuzz/corpus/$t" | wc -l) inputs"
  if [ "$status" = CRASH ]; then
    grep -E 'ERROR|panicked|SUMMARY|Test unit written|^thread' "$log" | head -20 || true
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in: ${failed[*]} (inputs in fuzz/artifacts/, logs in fuzz/logs/)"
  exit 1
fi
