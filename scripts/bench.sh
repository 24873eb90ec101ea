#!/usr/bin/env bash
# Create-batch throughput and latency over HTTP on loopback: `scripts/bench.sh`.
#
# Builds the release binary, starts it on a free port with a fresh embedded store
# and drives it with wrk (2 threads, 64 connections, --latency):
#
#   baseline      GET /health: HTTP + router, no storage work (the ratio's denominator)
#   create        POST /v1/batches, no Idempotency-Key: a real create per request
#   create+key    POST /v1/batches, a distinct Idempotency-Key per request: a real
#                 create through the idempotent path
#   replay        POST /v1/batches, the same key every time: the replay path
#
# then restarts the server against a fresh table in moto (a Python DynamoDB
# emulator) and runs the same four scenarios there. Every scenario runs RUNS
# times after a short warm-up; the script prints each run, the medians, the ratio
# of median throughput to the same server's median baseline, and a markdown
# table for BENCHMARKS.md. Any non-2xx response or socket error is flagged and
# makes the script exit 2 (after the table), so a broken run never reads as a
# fast one.
#
# Environment (defaults in brackets):
#   DURATION=10          seconds per embedded-store run
#   RUNS=3               runs per scenario (the table shows medians)
#   WARMUP=2             seconds of unrecorded warm-up before each scenario (0: none)
#   CONNECTIONS=64 THREADS=2   wrk -c / -t
#   WRK_TIMEOUT=10s      wrk --timeout (a slower response counts as a socket timeout)
#   MOTO=1               0 skips the moto scenarios
#   MOTO_DURATION=5 MOTO_RUNS=$RUNS   the same, against moto
#   PIN=1                server on CPU 0, wrk on CPU 1 (taskset), so the load
#                        generator never takes the server's core; 0 lets them share
#                        both cores as the scheduler sees fit
#   SERVER_RUST_LOG=info the server's RUST_LOG (info logs one line per create, as shipped)
#   BENCH_OUT=<tmp dir>  where raw wrk output and server logs are kept
#   SKIP_BUILD=1         use the existing binary (no cargo build)
#   BENCH_REV=<commit>   benchmark that commit instead of the working tree: it is
#                        exported (git archive) to target/bench-rev/src and built with
#                        CARGO_TARGET_DIR=target/bench-rev/target, leaving the working
#                        tree and target/release alone (for when others are mid-edit)
#   QUIET_BELOW=15 QUIET_TIMEOUT=600   before each run, wait (at most QUIET_TIMEOUT s)
#                        until the machine is under QUIET_BELOW % busy: other people's
#                        builds on a 2-core machine would otherwise be measured too
#   OTHER_MAX=0.25 BUSY_RETRIES=3   a run during which other processes (anything but
#                        our server, moto and wrk) used more than OTHER_MAX cores is
#                        discarded and repeated, up to BUSY_RETRIES times per run
#
# Needs: cargo, curl, python3 (or .tools/venv made by scripts/test.sh, for moto),
# and wrk (installed with apt-get when missing).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BENCH_DIR=$ROOT/scripts/bench
BIN=$ROOT/target/release/lambda-batches
VENV=$ROOT/.tools/venv

DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WRK_TIMEOUT=${WRK_TIMEOUT:-10s}
MOTO=${MOTO:-1}
MOTO_DURATION=${MOTO_DURATION:-5}
MOTO_RUNS=${MOTO_RUNS:-$RUNS}
PIN=${PIN:-1}
SERVER_RUST_LOG=${SERVER_RUST_LOG:-info}
QUIET_BELOW=${QUIET_BELOW:-15}
QUIET_TIMEOUT=${QUIET_TIMEOUT:-600}
OTHER_MAX=${OTHER_MAX:-0.25}
BUSY_RETRIES=${BUSY_RETRIES:-3}
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
OUT=${BENCH_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/lambda-batches-bench.XXXXXX")}
mkdir -p "$OUT"

BODY='{"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h"}'

if [[ $PIN == 1 ]]; then
  SERVER_PIN=(taskset -c 0)
  WRK_PIN=(taskset -c 1)
else
  SERVER_PIN=()
  WRK_PIN=()
fi

log() { printf '%s\n' "$*" >&2; }
die() {
  log "scripts/bench.sh: $*"
  exit 1
}

# --- processes: always stopped, whichever way the script ends -------------------

SERVER_PID=""
MOTO_PID=""
DATA_DIRS=()
stop_pid() {
  local pid=$1
  [[ -n $pid ]] || return 0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local status=$?
  stop_pid "$SERVER_PID"
  stop_pid "$MOTO_PID"
  # The stores can reach hundreds of MB; the raw wrk output and logs stay.
  for dir in "${DATA_DIRS[@]}"; do rm -rf "$dir"; done
  gzip -f "$OUT"/server-*.log "$OUT"/moto.log 2>/dev/null || true
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools ----------------------------------------------------------------------

if ! command -v wrk >/dev/null; then
  log "==> installing wrk"
  as_root=()
  [[ $(id -u) -eq 0 ]] || as_root=(sudo)
  if ! "${as_root[@]}" apt-get install -y wrk >&2; then
    "${as_root[@]}" apt-get update >&2
    "${as_root[@]}" apt-get install -y wrk >&2
  fi
fi
command -v curl >/dev/null || die "curl is needed"
if command -v python3 >/dev/null; then PY=python3; else PY=$VENV/bin/python; fi

# What is measured: the working tree, or the commit BENCH_REV.
SRC=$ROOT
if [[ -n ${BENCH_REV:-} ]]; then
  REV=$(git rev-parse --verify "${BENCH_REV}^{commit}") || die "unknown BENCH_REV $BENCH_REV"
  SRC=$ROOT/target/bench-rev/src
  export CARGO_TARGET_DIR=$ROOT/target/bench-rev/target
  BIN=$CARGO_TARGET_DIR/release/lambda-batches
  if [[ -z ${SKIP_BUILD:-} ]]; then
    rm -rf "$SRC"
    mkdir -p "$SRC"
    git archive "$REV" | tar -x -C "$SRC"
  fi
  MEASURED="commit $(git rev-parse --short "$REV") (BENCH_REV)"
else
  MEASURED="working tree at $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null ||
    MEASURED+=" with uncommitted changes in src/ or Cargo.*"
fi

if [[ -z ${SKIP_BUILD:-} ]]; then
  log "==> cargo build --release --bin lambda-batches ($MEASURED)"
  (cd "$SRC" && cargo build --release --bin lambda-batches >&2) ||
    die "the build failed ($MEASURED); if others are mid-edit, try BENCH_REV=HEAD"
fi
[[ -x $BIN ]] || die "$BIN is missing (run without SKIP_BUILD)"
# Run a private copy: a rebuild by someone else during the run cannot swap it.
cp "$BIN" "$OUT/lambda-batches"
BUILT_BIN=$BIN
BIN=$OUT/lambda-batches

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_until_up NAME URL PID LOG: any HTTP answer within 60 s, or fail early if PID died.
wait_until_up() {
  local name=$1 url=$2 pid=$3 logfile=$4 deadline=$((SECONDS + 60))
  until curl -s -o /dev/null --max-time 2 "$url"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 "$logfile" >&2 || true
      die "$name exited during start-up (log: $logfile)"
    fi
    ((SECONDS < deadline)) || die "$name did not answer $url within 60 s (log: $logfile)"
    sleep 0.1
  done
}

# start_server LABEL [VAR=value ...]: our server on a free port, with the given env.
start_server() {
  local label=$1
  shift
  stop_pid "$SERVER_PID"
  SERVER_PID=""
  PORT=$(free_port)
  BASE=http://127.0.0.1:$PORT
  local logfile=$OUT/server-$label.log
  SERVER_LOG=$logfile
  env PORT="$PORT" RUST_LOG="$SERVER_RUST_LOG" "$@" \
    "${SERVER_PIN[@]}" "$BIN" >"$logfile" 2>&1 &
  SERVER_PID=$!
  wait_until_up "lambda-batches ($label)" "$BASE/health" "$SERVER_PID" "$logfile"
  [[ $(curl -s -o /dev/null -w '%{http_code}' "$BASE/health") == 200 ]] ||
    die "GET /health did not answer 200 ($label)"
  log "  lambda-batches ($label) pid $SERVER_PID at $BASE, log $logfile"
}

# Before measuring, check each scenario does what its name says.
# Sets REPLAY_KEY to a key whose batch exists, for the replay scenario.
sanity_check() {
  local label=$1 headers=$OUT/sanity-headers.txt code id1 id2
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$BASE/v1/batches" \
    -H 'Content-Type: application/json' -d "$BODY")
  [[ $code == 200 ]] || die "create without key answered $code ($label)"

  REPLAY_KEY="bench-replay-$(date +%s%N)-$RANDOM"
  id1=$(curl -s -X POST "$BASE/v1/batches" -H 'Content-Type: application/json' \
    -H "Idempotency-Key: $REPLAY_KEY" -d "$BODY" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  id2=$(curl -s -D "$headers" -X POST "$BASE/v1/batches" -H 'Content-Type: application/json' \
    -H "Idempotency-Key: $REPLAY_KEY" -d "$BODY" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  [[ $id1 == "$id2" ]] || die "a replay returned another batch ($id1 vs $id2, $label)"
  grep -qi '^idempotent-replayed: *true' "$headers" ||
    die "a replay was not marked idempotent-replayed ($label)"
  log "  sanity ($label): create 200; replay of $REPLAY_KEY returns $id1 with idempotent-replayed: true"
}

# --- CPU accounting: who used the cores during a run -------------------------------

# Busy clock ticks of the whole machine (user, nice, system, irq, softirq, steal).
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
# User + system ticks of one process, all its threads (0 when there is none).
proc_ticks() {
  [[ -n $1 ]] && awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# Waits until the machine is quiet (our idle server and moto included), so a
# run does not also measure someone else's build. Gives up after QUIET_TIMEOUT
# seconds and goes on; the run's "other CPU" column then shows the disturbance.
wait_for_quiet() {
  local waited=0 before after ours0 ours1 pct ours
  while :; do
    before=$(busy_ticks)
    ours0=$(($(proc_ticks "$SERVER_PID") + $(proc_ticks "$MOTO_PID")))
    sleep 1
    after=$(busy_ticks)
    ours1=$(($(proc_ticks "$SERVER_PID") + $(proc_ticks "$MOTO_PID")))
    pct=$(((after - before) * 100 / (CLK_TCK * NCPU)))
    ours=$(((ours1 - ours0) * 100 / (CLK_TCK * NCPU)))
    ((pct < QUIET_BELOW)) && break
    if ((waited >= QUIET_TIMEOUT)); then
      log "    machine still ${pct}% busy after ${waited}s; measuring anyway"
      break
    fi
    # "ours" is mostly the server's in-process worker (and moto) still
    # processing the batches the previous run created.
    ((waited % 30 == 0)) &&
      log "    machine ${pct}% busy (our server/moto: ${ours}%, the rest: others); waiting for quiet"
    sleep 4
    waited=$((waited + 5))
  done
  ((waited == 0)) || log "    quiet after ${waited}s"
}

# --- wrk runs and their numbers ---------------------------------------------------

server_alive() {
  kill -0 "$SERVER_PID" 2>/dev/null && return 0
  tail -n 20 "$SERVER_LOG" >&2 || true
  die "the server (pid $SERVER_PID) is gone: it exited or was killed by something else (log: $SERVER_LOG)"
}

# to_ms VALUE: wrk's 812.00us / 1.23ms / 2.01s / 1.00m -> milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else { printf "nan" }
  }'
}

# median of the numbers on stdin, one per line.
median() {
  sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "nan"; exit }
    if (NR % 2) { print v[(NR + 1) / 2] } else { print (v[NR / 2] + v[NR / 2 + 1]) / 2 }
  }'
}

# wrk_run OUTFILE SECONDS URL [SCRIPT [ARG]]
wrk_run() {
  local outfile=$1 secs=$2 url=$3 script=${4:-} arg=${5:-}
  local cmd=("${WRK_PIN[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --timeout "$WRK_TIMEOUT" --latency)
  [[ -n $script ]] && cmd+=(-s "$script")
  cmd+=("$url")
  [[ -n $arg ]] && cmd+=(-- "$arg")
  local busy0 server0 moto0 busy1 server1 moto1 wrk_cpu start_ns end_ns TIMEFORMAT='%U %S'
  busy0=$(busy_ticks)
  server0=$(proc_ticks "$SERVER_PID")
  moto0=$(proc_ticks "$MOTO_PID")
  start_ns=$(date +%s%N)
  # `time` gives wrk's own CPU seconds (user, system) on its stderr.
  { time "${cmd[@]}" >"$outfile" 2>&1; } 2>"$outfile.time" ||
    { cat "$outfile" >&2; server_alive; die "wrk failed: ${cmd[*]}"; }
  end_ns=$(date +%s%N)
  busy1=$(busy_ticks)
  server1=$(proc_ticks "$SERVER_PID")
  moto1=$(proc_ticks "$MOTO_PID")
  wrk_cpu=$(awk '{ print $1 + $2 }' "$outfile.time")
  # Cores used on average during the run: server, moto, wrk, and everything else
  # (other processes and kernel threads, e.g. page-cache writeback).
  CPU_SPLIT=$(awk -v t="$CLK_TCK" -v el="$(((end_ns - start_ns) / 1000))" \
    -v b="$((busy1 - busy0))" -v s="$((server1 - server0))" -v m="$((moto1 - moto0))" -v w="$wrk_cpu" \
    'BEGIN { el /= 1e6; srv = s / t / el; mo = m / t / el; wr = w / el; all = b / t / el
             other = all - srv - mo - wr; if (other < 0) other = 0
             printf "%.2f %.2f %.2f %.2f", srv, mo, wr, other }')
}

# With RUST_LOG=info the server logs "batch created" once per real create (a
# replay logs nothing), which shows whether a scenario did what its name says:
# every completed request of a create scenario created a batch (so no key
# repeated), and no request of the replay scenario did. (Requests still in flight
# when wrk stops are served but not counted by wrk, hence ">=".)
created_count() {
  if [[ $SERVER_RUST_LOG == info ]]; then grep -c 'batch created' "$SERVER_LOG" || true; else echo 0; fi
}
check_creates() {
  local outfile=$1 script=$2 before=$3 what=$4 requests created
  [[ $SERVER_RUST_LOG == info && -n $script ]] || return 0
  requests=$(awk '/requests in/ { print $1 }' "$outfile")
  created=$(($(created_count) - before))
  case $(basename "$script") in
    create*)
      if ((created < requests)); then
        log "    !!!!! $what: $requests requests but only $created batches created (keys repeated?)"
        FLAGGED+=("$what: $requests requests, $created creates")
      fi
      ;;
    replay*)
      if ((created != 0)); then
        log "    !!!!! $what: $created batches created during the replay scenario"
        FLAGGED+=("$what: $created creates during replay")
      fi
      ;;
  esac
  log "    $what: $requests requests completed, $created batches created"
}

FLAGGED=()
DISTURBED=()
# Results, one line per scenario: backend|scenario|rps|p50|p99|ratio|runs_rps|errors
RESULTS=()

# scenario BACKEND NAME SECONDS RUN_COUNT URL [SCRIPT] [ARG|unique]
# (ARG "unique" means: a fresh nonce per run.)
scenario() {
  local backend=$1 name=$2 secs=$3 runs=$4 url=$5 script=${6:-} arg=${7:-}
  local tag=${backend}-${name//[^A-Za-z0-9]/_} run outfile rps p50 p99 non2xx sockerr all_rps="" errors=0
  local rps_list=() p50_list=() p99_list=() srv_list=() moto_list=() wrk_list=() other_list=()
  local cpu_srv cpu_moto cpu_wrk cpu_other created0
  log "==> $backend / $name: wrk -t$THREADS -c$CONNECTIONS -d${secs}s x $runs${script:+ -s ${script#"$ROOT"/}}"
  if [[ $WARMUP != 0 ]]; then
    local warm_arg=$arg
    [[ $arg == unique ]] && warm_arg="warm$(date +%s%N)$RANDOM"
    wrk_run "$OUT/$tag-warmup.txt" "$WARMUP" "$url" "$script" "$warm_arg"
  fi
  for ((run = 1; run <= runs; run++)); do
    outfile=$OUT/$tag-run$run.txt
    local run_arg=$arg
    [[ $arg == unique ]] && run_arg="$(date +%s%N)$RANDOM"
    local attempt
    for ((attempt = 0; ; attempt++)); do
      wait_for_quiet
      server_alive
      created0=$(created_count)
      wrk_run "$outfile" "$secs" "$url" "$script" "$run_arg"
      check_creates "$outfile" "$script" "$created0" "$backend / $name run $run"
      read -r cpu_srv cpu_moto cpu_wrk cpu_other <<<"$CPU_SPLIT"
      rps=$(awk '/^Requests\/sec:/ { print $2 }' "$outfile")
      p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$outfile")")
      p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$outfile")")
      non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$outfile")
      sockerr=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$outfile")
      non2xx=${non2xx:-0}
      sockerr=${sockerr:-0}
      [[ -n $rps ]] || { cat "$outfile" >&2; die "no Requests/sec in $outfile"; }
      log "    run $run: $rps req/s, p50 $p50 ms, p99 $p99 ms, non-2xx $non2xx, socket errors $sockerr;" \
        "cores used: server $cpu_srv, moto $cpu_moto, wrk $cpu_wrk, other $cpu_other"
      if ((non2xx > 0 || sockerr > 0)); then
        log ""
        log "    !!!!! $backend / $name run $run: $non2xx non-2xx responses, $sockerr socket errors ($outfile)"
        log ""
        errors=$((errors + non2xx + sockerr))
      fi
      # Errors count even in a run discarded below.
      awk -v o="$cpu_other" -v m="$OTHER_MAX" 'BEGIN { exit !(o > m) }' || break
      if ((attempt >= BUSY_RETRIES)); then
        log "    !!! run $run: other processes used $cpu_other cores (> $OTHER_MAX) in every attempt; keeping the last"
        DISTURBED+=("$backend / $name run $run: other processes used $cpu_other cores")
        break
      fi
      log "    run $run discarded: other processes used $cpu_other cores (> $OTHER_MAX); repeating it"
      mv "$outfile" "$outfile.discarded$attempt"
      [[ $arg == unique ]] && run_arg="$(date +%s%N)$RANDOM"
    done
    srv_list+=("$cpu_srv")
    moto_list+=("$cpu_moto")
    wrk_list+=("$cpu_wrk")
    other_list+=("$cpu_other")
    rps_list+=("$rps")
    p50_list+=("$p50")
    p99_list+=("$p99")
    all_rps+="${all_rps:+, }$(printf '%.0f' "$rps")"
  done
  local m_rps m_p50 m_p99
  m_rps=$(printf '%s\n' "${rps_list[@]}" | median)
  m_p50=$(printf '%s\n' "${p50_list[@]}" | median)
  m_p99=$(printf '%s\n' "${p99_list[@]}" | median)
  local m_srv m_moto m_wrk m_other
  m_srv=$(printf '%s\n' "${srv_list[@]}" | median)
  m_moto=$(printf '%s\n' "${moto_list[@]}" | median)
  m_wrk=$(printf '%s\n' "${wrk_list[@]}" | median)
  m_other=$(printf '%s\n' "${other_list[@]}" | median)
  ((errors == 0)) || FLAGGED+=("$backend / $name: $errors non-2xx responses or socket errors")
  RESULTS+=("$backend|$name|$m_rps|$m_p50|$m_p99|$all_rps|$errors|$m_srv|$m_moto|$m_wrk|$m_other")
  log "    median: $m_rps req/s, p50 $m_p50 ms, p99 $m_p99 ms"
}

# run_suite BACKEND SECONDS RUN_COUNT: the four scenarios against $BASE.
run_suite() {
  local backend=$1 secs=$2 runs=$3
  sanity_check "$backend"
  scenario "$backend" "baseline: GET /health" "$secs" "$runs" "$BASE/health"
  scenario "$backend" "create, no key" "$secs" "$runs" "$BASE/v1/batches" "$BENCH_DIR/create.lua"
  scenario "$backend" "create, unique Idempotency-Key" "$secs" "$runs" "$BASE/v1/batches" \
    "$BENCH_DIR/create_unique_key.lua" unique
  scenario "$backend" "replay, same Idempotency-Key" "$secs" "$runs" "$BASE/v1/batches" \
    "$BENCH_DIR/replay.lua" "$REPLAY_KEY"
}

# --- the machine ------------------------------------------------------------------

machine_info() {
  local cpu mem
  cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown)
  mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null || echo unknown)
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- CPUs (nproc): $(nproc); CPU: $cpu; memory: $mem"
  echo "- kernel: $(uname -srm)"
  echo "- $(rustc --version 2>/dev/null || echo 'rustc unknown'); $(wrk -v 2>&1 | head -n1 | awk '{ print $1, $2 }')"
  echo "- measured: $MEASURED; binary: ${BUILT_BIN#"$ROOT"/} (release profile)"
  if [[ $PIN == 1 ]]; then
    echo "- pinning: server on CPU 0, wrk on CPU 1 (PIN=1)"
  else
    echo "- pinning: none; server and wrk share all $(nproc) cores"
  fi
  echo "- wrk -t$THREADS -c$CONNECTIONS --latency; embedded: ${DURATION}s x $RUNS runs; moto: ${MOTO_DURATION}s x $MOTO_RUNS runs; ${WARMUP}s warm-up per scenario; server RUST_LOG=$SERVER_RUST_LOG"
}

# --- the run ----------------------------------------------------------------------

log "==> raw output and logs: $OUT"

data_dir=$(mktemp -d "$OUT/data.XXXXXX")
DATA_DIRS+=("$data_dir")
start_server embedded BATCHES_DATA_DIR="$data_dir"
run_suite embedded "$DURATION" "$RUNS"

if [[ $MOTO == 1 ]]; then
  [[ -x $VENV/bin/moto_server ]] ||
    die "$VENV/bin/moto_server is missing: run scripts/test.sh once, or: python3 -m venv .tools/venv && .tools/venv/bin/pip install 'moto[server]' boto3 PyYAML (or MOTO=0)"
  moto_port=$(free_port)
  "${SERVER_PIN[@]}" "$VENV/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$OUT/moto.log" 2>&1 &
  MOTO_PID=$!
  wait_until_up moto "http://127.0.0.1:$moto_port/moto-api/" "$MOTO_PID" "$OUT/moto.log"
  table="bench-$(date +%s)-$RANDOM"
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  # The table exactly as template.yaml's BatchesTable defines it (keys and GSI).
  "$VENV/bin/python" - "$SRC/template.yaml" "http://127.0.0.1:$moto_port" "$table" <<'EOF'
import sys, boto3, yaml
template, endpoint, table = sys.argv[1:]
class Loader(yaml.SafeLoader):
    pass
Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # !Ref, !Sub, ...
props = yaml.load(open(template), Loader=Loader)["Resources"]["BatchesTable"]["Properties"]
client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
client.create_table(
    TableName=table,
    **{k: props[k] for k in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode")},
)
client.get_waiter("table_exists").wait(TableName=table)
print(f"  moto table {table} created from template.yaml", file=sys.stderr)
EOF
  start_server moto BATCHES_TABLE="$table" AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port"
  run_suite moto "$MOTO_DURATION" "$MOTO_RUNS"
fi

# --- the report -------------------------------------------------------------------

echo
echo "## Machine"
echo
machine_info
echo
echo "## Results (medians of the runs; req/s ratio = median req/s / the same server's median GET /health req/s; p99 ratio = median p99 / the same server's median GET /health p99)"
echo
echo "| store | scenario | req/s | p50 ms | p99 ms | req/s vs baseline | p99 vs baseline | req/s per run | non-2xx / socket errors | cores: server / moto / wrk / other |"
echo "|---|---|---:|---:|---:|---:|---:|---|---:|---|"
base_rps="" base_p99=""
for line in "${RESULTS[@]}"; do
  IFS='|' read -r backend name rps p50 p99 runs_rps errors c_srv c_moto c_wrk c_other <<<"$line"
  [[ $name == baseline* ]] && base_rps=$rps && base_p99=$p99
  ratio=$(awk -v a="$rps" -v b="$base_rps" 'BEGIN { r = a / b; printf (r >= 0.1 ? "%.2f" : "%.4f"), r }')
  p99_ratio=$(awk -v a="$p99" -v b="$base_p99" 'BEGIN { printf "%.2f", a / b }')
  flag=$errors
  ((errors == 0)) || flag="**$errors FLAGGED**"
  printf '| %s | %s | %.0f | %.2f | %.2f | %s | %s | %s | %s | %.2f / %.2f / %.2f / %.2f |\n' \
    "$backend" "$name" "$rps" "$p50" "$p99" "$ratio" "$p99_ratio" "$runs_rps" "$flag" \
    "$c_srv" "$c_moto" "$c_wrk" "$c_other"
done

echo
echo "## Targets (embedded store: >= 10,000 creates/s; latency reported as create p99 / GET /health p99 of the same run)"
echo
for line in "${RESULTS[@]}"; do
  IFS='|' read -r backend name rps p50 p99 _ <<<"$line"
  [[ $backend == embedded ]] || continue
  if [[ $name == baseline* ]]; then
    base_p99=$p99
    continue
  fi
  verdict=$(awk -v r="$rps" -v p="$p99" -v b="$base_p99" 'BEGIN {
    t = (r >= 10000) ? "met" : "MISSED"
    printf "throughput %s (%.0f req/s); p99 %.2f ms = %.2f x GET /health p99 (%.2f ms)", t, r, p, p / b, b }')
  echo "- $name: $verdict"
done
if ((${#DISTURBED[@]} > 0)); then
  echo
  echo "Runs kept although other processes were busy (their numbers are pessimistic):"
  for d in "${DISTURBED[@]}"; do echo "- $d"; done
fi
echo
echo "Raw wrk output and server logs (gzipped at exit): $OUT"

if ((${#FLAGGED[@]} > 0)); then
  log ""
  log "!!!!! scripts/bench.sh: responses other than 2xx, or socket errors, in:"
  for f in "${FLAGGED[@]}"; do log "!!!!!   $f"; done
  log "!!!!! those numbers do not measure successful creates; see the raw output."
  exit 2
fi
