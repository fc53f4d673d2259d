#!/usr/bin/env bash
# The dashboard at scale (issue 10); see BENCHMARKS.md, "Dashboard (issue 10)".
#
#   bench/dashboard.sh [--quick] [--only sqlite,pg] [--bin PATH [--bin-rev COMMIT]] [--no-reload]
#
# For each store (SQLite; PostgreSQL on a throwaway server from scripts/lib/pg.sh,
# fsync on): a fresh database (`slotguard migrate`) filled directly with SQL by
# bench/dashboard.py (50 clinics, 200 doctors, 1,000,000 appointments over the last
# 120 days and the next 5, 10,000 incidents with their Kloqo member documents, the
# booking rollups those bookings leave, a nightly audit run per clinic and day), then
# `slotguard serve` on it, a staff admin logged in through the form, and:
#   1. pages: GET /healthz (the same-run baseline), /, /incidents, /fragments/overview
#      and /incidents?state=open, one request at a time on one keep-alive connection,
#      round-robin, 200 rounds after 20 warm-up rounds (capped at $max_seconds);
#      p50/p99/max, body bytes, p99 ÷ /healthz p99, and the server's own logged time
#      per request (the very first GET of / on its own: nothing kept yet); then 3
#      requests of / each over a minute after the last (each renders the overview anew);
#   2. live updates on the same server: 200 concurrent GET /events streams; per trial
#      two Kloqo documents PUT into one free slot through the watch API (a new
#      incident), and the time from the second PUT's answer to each stream's
#      `event: incident`; the server's VmRSS and VmHWM while they are open. Then
#      (unless --no-reload) one more incident on which every stream reloads
#      /fragments/overview, as the overview page's htmx does;
#   3. EXPLAIN of the statements the overview and incidents pages run;
#   4. the streams again on a fresh server that has served no page (their own cost);
#   5. PostgreSQL only: pg_stat_statements (loaded for this step) per page request.
# Other processes' share of the CPU is recorded for each phase (bench/probe.py), and
# each phase waits (up to 5 minutes) for a quiet machine first.
#
# --quick: 100,000 appointments, 1,000 incidents, 30 rounds, 1 trial: a smoke run.
# --bin: use this slotguard binary (a copy of it) instead of target/release/slotguard
# (built with `cargo build --release` when missing); --bin-rev records which commit it
# was built from.
# Prints the markdown tables at the end; raw outputs go to bench/results/dashboard-*
# (not committed); `python3 bench/dashboard.py table bench/results/dashboard-{sqlite,postgres}.json`
# prints the tables again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage="usage: bench/dashboard.sh [--quick] [--only sqlite,pg] [--bin PATH [--bin-rev COMMIT]] [--no-reload]"
quick=0 only=sqlite,pg bin_src="" bin_rev="" reload=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1 ;;
    --only) only=${2:?$usage}; shift ;;
    --bin) bin_src=${2:?$usage}; shift ;;
    --bin-rev) bin_rev=${2:?$usage}; shift ;;
    --no-reload) reload=0 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  shift
done
wants() { [[ ",$only," == *",$1,"* ]]; }

if [[ $quick == 1 ]]; then
  appointments=100000 incidents=1000 rounds=30 warmup=5 trials=1 streams=200 max_seconds=300 cold=0
else
  appointments=1000000 incidents=10000 rounds=200 warmup=20 trials=3 streams=200 max_seconds=1800 cold=3
fi

if [[ -z $bin_src ]]; then
  [[ -x target/release/slotguard ]] || cargo build --release
  bin_src=target/release/slotguard
fi
results=bench/results
mkdir -p "$results"
# Only the stores measured now are replaced: `--only sqlite` keeps PostgreSQL's files.
wants sqlite && rm -rf "$results"/dashboard-sqlite*
wants pg && rm -rf "$results"/dashboard-postgres*
work=$(mktemp -d /tmp/slotguard-dashboard.XXXXXX)
bin=$work/slotguard
cp "$bin_src" "$bin"
dash=(python3 bench/dashboard.py)
probe=(python3 bench/probe.py)

# shellcheck source=scripts/lib/pg.sh
source scripts/lib/pg.sh

server_pid="" url="" next_slot=500
stop_server() {
  if [[ -n "$server_pid" ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
cleanup() {
  stop_server
  stop_pg
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { printf '[dashboard %s] %s\n' "$(date +%T)" "$*" >&2; }
psql_() { PGOPTIONS="-c client_min_messages=warning" "$pg_bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }

# ---- the machine ----
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$work/machine.json" "$quick" "$load_before" "$bin_src" "$bin_rev" <<'EOF'
import datetime, json, os, subprocess, sys
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
rev = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
built = datetime.datetime.fromtimestamp(os.stat(sys.argv[4]).st_mtime).astimezone()
json.dump({"nproc": os.cpu_count(), "cpu": cpu, "memGiB": round(mem / 2**20, 1), "loadBefore": sys.argv[3],
           "binary": sys.argv[4], "binaryBuilt": built.isoformat(timespec="seconds"),
           "binaryCommit": sys.argv[5] or None,
           "mode": "quick" if sys.argv[2] == "1" else "full", "git": rev,
           "python": sys.version.split()[0],
           "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")},
          open(sys.argv[1], "w"), indent=2)
EOF
say "$(nproc) cores, load average $load_before; binary $bin_src"

# start_serve STORE DB: slotguard on a free port, a staff admin logged in, start-up
# work settled; sets server_pid and url.
start_serve() {
  local store=$1 db=$2 log=$results/dashboard-$1.server.log port
  port=$(free_port)
  url=http://127.0.0.1:$port
  # SQLite: the default --sqlite-sync full (the loader wrote the rows itself).
  "$bin" serve --database "$db" --listen "127.0.0.1:$port" >>"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 300); do
    curl -fsS "$url/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "$url/healthz" >/dev/null || { say "$store: slotguard did not come up"; tail -n 20 "$log" >&2; return 1; }
  "${dash[@]}" login --url "$url" --email bench@example.org --password bench-password-123 --out "$work/cookie"
  "${dash[@]}" settle --pid "$server_pid"
}

# sse STORE NAME [ARGS...]: the live streams against the running server.
sse() {
  local store=$1 name=$2 target clinic doctor date doctor_name pg=()
  shift 2
  [[ $store == postgres ]] && pg=(--psql "$pg_bindir/psql" --dsn "postgres://postgres@127.0.0.1:$pg_port/dashboard")
  target=$(python3 -c 'import json, sys; s = json.load(open(sys.argv[1]))["sse"]
print(s["clinic"], s["doctor"], s["date"], s["doctorName"], sep="\t")' "$results/dashboard-$store-load.json")
  IFS=$'\t' read -r clinic doctor date doctor_name <<<"$target"
  "${probe[@]}" run --out "$results/dashboard-$store-$name.probe.json" --server-pid "$server_pid" "${pg[@]}" -- \
    "${dash[@]}" sse --url "$url" --cookie-file "$work/cookie" --key-file "$work/key" --streams "$streams" \
    --trials "$trials" --server-pid "$server_pid" --clinic "$clinic" --doctor "$doctor" \
    --doctor-name "$doctor_name" --date "$date" --first-slot "$next_slot" "$@" \
    --out "$results/dashboard-$store-$name.json"
  # Each incident of a run takes a slot of its own; the next run starts after them.
  next_slot=$((next_slot + trials + 1))
}

# run_store STORE: everything for one store, on a fresh database and server.
run_store() {
  local store=$1 db log pg=() t0
  log=$results/dashboard-$store.server.log
  next_slot=500
  cp "$work/machine.json" "$results/dashboard-$store-machine.json"
  if [[ $store == postgres ]]; then
    psql_ -d postgres -c "DROP DATABASE IF EXISTS dashboard WITH (FORCE)" -c "CREATE DATABASE dashboard" >/dev/null
    db="postgres://postgres@127.0.0.1:$pg_port/dashboard"
    pg=(--psql "$pg_bindir/psql" --dsn "$db")
  else
    db=$work/dashboard.db
    rm -f "$db" "$db"-*
  fi
  "$bin" migrate --database "$db" >/dev/null
  say "$store: loading (${appointments} appointments, ${incidents} incidents)"
  t0=$SECONDS
  if [[ $store == postgres ]]; then
    "${dash[@]}" load --store postgres --psql "$pg_bindir/psql" --dsn "$db" \
      --appointments "$appointments" --incidents "$incidents" --out "$results/dashboard-$store-load.json"
    psql_ -d dashboard -At -c "SELECT pg_size_pretty(pg_database_size('dashboard'))" >"$work/size"
  else
    "${dash[@]}" load --store sqlite --db "$db" \
      --appointments "$appointments" --incidents "$incidents" --out "$results/dashboard-$store-load.json"
    du -sh "$db" | cut -f1 >"$work/size"
  fi
  say "$store: loaded in $((SECONDS - t0)) s; database $(cat "$work/size")"
  python3 - "$results/dashboard-$store-load.json" "$(cat "$work/size")" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); r["databaseSize"] = sys.argv[2]; json.dump(r, open(sys.argv[1], "w"), indent=2)
EOF

  printf 'bench-password-123\n' | "$bin" users create --email bench@example.org --role admin \
    --password-stdin --database "$db" >/dev/null 2>>"$log"
  "$bin" keys create --role admin --database "$db" 2>>"$log" >"$work/key"

  start_serve "$store" "$db"
  "${probe[@]}" quiet --max-wait 300
  say "$store: pages, $rounds rounds after $warmup warm-up rounds"
  mkdir -p "$results/dashboard-$store-bodies"
  "${probe[@]}" run --out "$results/dashboard-$store-pages.probe.json" --server-pid "$server_pid" "${pg[@]}" -- \
    "${dash[@]}" pages --url "$url" --cookie-file "$work/cookie" --n "$rounds" --warmup "$warmup" \
    --max-seconds "$max_seconds" --cold "$cold" --bodies "$results/dashboard-$store-bodies" --tag "$store" \
    --out "$results/dashboard-$store-pages.json"

  "${probe[@]}" quiet --max-wait 300
  say "$store: $streams live streams on the same server, $trials incidents$([[ $reload == 1 ]] && echo ', then one with overview reloads')"
  local sse_args=()
  [[ $reload == 1 ]] && sse_args+=(--reload)
  sse "$store" sse "${sse_args[@]}"
  stop_server

  say "$store: query plans"
  if [[ $store == postgres ]]; then
    "${dash[@]}" explain --store postgres --psql "$pg_bindir/psql" --dsn "$db" \
      --load "$results/dashboard-$store-load.json" --out "$results/dashboard-$store-explain.txt"
  else
    "${dash[@]}" explain --store sqlite --db "$db" \
      --load "$results/dashboard-$store-load.json" --out "$results/dashboard-$store-explain.txt"
  fi

  # The streams alone: a server that has served no page (the same database).
  start_serve "$store" "$db"
  "${probe[@]}" quiet --max-wait 300
  say "$store: $streams live streams on a fresh server, $trials incidents"
  sse "$store" sse-fresh
  stop_server

  if [[ $store == postgres ]]; then
    # Which statements each page runs, and how often (pg_stat_statements, loaded for
    # this step only: it needs a restart).
    printf "\nshared_preload_libraries = 'pg_stat_statements'\n" >>"$pg_tmp/data/postgresql.conf"
    restart_pg
    psql_ -d dashboard -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
    start_serve "$store" "$db"
    "${dash[@]}" statements --url "$url" --cookie-file "$work/cookie" --psql "$pg_bindir/psql" --dsn "$db" \
      --out "$results/dashboard-$store-statements.txt"
    stop_server
  fi
  "${dash[@]}" summary --store "$store" --dir "$results"
}

if wants pg; then
  PG_DURABLE=1 start_pg || { echo "bench: PostgreSQL: $skip_reason" >&2; exit 1; }
  psql_ -d postgres -At -c "SELECT 'PostgreSQL ' || current_setting('server_version')
    || ': fsync=' || current_setting('fsync') || ', synchronous_commit=' || current_setting('synchronous_commit')
    || ', shared_buffers=' || current_setting('shared_buffers') || ', work_mem=' || current_setting('work_mem')" |
    tee "$results/dashboard-postgres-version.txt" >&2
fi
summaries=()
if wants sqlite; then
  run_store sqlite
  summaries+=("$results/dashboard-sqlite.json")
fi
if wants pg; then
  run_store postgres
  summaries+=("$results/dashboard-postgres.json")
fi
"${dash[@]}" table "${summaries[@]}"
