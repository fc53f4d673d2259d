#!/usr/bin/env bash
# slotguard against raw SQL on the same machine, in the same run; see BENCHMARKS.md.
#
#   bench/run.sh [--quick] [--wait-quiet] [--only pg,sqlite,plan,diag] [--clients "8 32 64"]
#                [--bin PATH]
#
# Default (the full run, about 13 minutes on a quiet machine): PostgreSQL spread and
# hot doctor-day at 8, 32 and 64 clients (pgbench with bench/pg_booking.sql vs
# `slotguard loadtest` over HTTP), SQLite (bench/sqlite_raw.py vs slotguard at 8, 32
# and 64 clients), the clinic's plan (10 arrivals/s for 60 s on slot 5) on both stores,
# and short diagnostic runs that count fsyncs, socket sends and SQL statements per
# booking (perf stat, pg_stat_statements). Each raw/slotguard comparison is made
# twice (the hot doctor-day three times), alternating, 15 s a side. --quick: a smoke run, a few seconds per measurement,
# once. --wait-quiet: first wait (up to 10 minutes) until the machine is idle. Each
# run records how much CPU other processes took; a comparison during which they took
# over 10 % of the machine is made once more. --clients applies to PostgreSQL.
# Prints the markdown tables at the end and leaves every raw output in bench/results/
# (replaced on each run).
#
# Needs target/release/slotguard (built with `cargo build --release` if missing; the
# run uses a copy, so a rebuild during the run changes nothing), or the binary --bin
# names (to measure an older build beside a newer one in one sitting), python3, curl, and the
# PostgreSQL server binaries with pgbench (found as scripts/test.sh finds them). The
# throwaway PostgreSQL is durable this time: fsync and synchronous_commit on.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage="usage: bench/run.sh [--quick] [--wait-quiet] [--only pg,sqlite,plan,diag] [--clients \"8 32 64\"] [--bin PATH]"
quick=0 wait_quiet=0 only=pg,sqlite,plan,diag clients="8 32 64" binary=target/release/slotguard
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1 ;;
    --wait-quiet) wait_quiet=1 ;;
    --only) only=${2:?$usage}; shift ;;
    --clients) clients=${2:?$usage}; shift ;;
    --bin) binary=${2:?$usage}; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  shift
done
wants() { [[ ",$only," == *",$1,"* ]]; }

# Seconds per measurement: PostgreSQL and SQLite closed-model runs, hot doctor-day
# (time measured over its rounds), the clinic's plan, the raw SQLite loop, diagnostics;
# and how many times each raw/slotguard comparison is made (alternating raw, slotguard;
# the hot doctor-day, a lock convoy, varies most from one trial to the next).
if [[ $quick == 1 ]]; then
  secs=3 hot_secs=3 plan_secs=5 sqlite_secs=3 diag_secs=2 top_after=0 trials=1 hot_trials=1
else
  secs=15 hot_secs=10 plan_secs=60 sqlite_secs=15 diag_secs=5 top_after=7 trials=2 hot_trials=3
fi

if [[ $binary == target/release/slotguard && ! -x $binary ]]; then
  cargo build --release
fi
[[ -x $binary ]] || { echo "bench/run.sh: no executable $binary" >&2; exit 2; }
results=bench/results
rm -rf "$results"
mkdir -p "$results"
work=$(mktemp -d /tmp/slotguard-bench.XXXXXX)
bin=$work/slotguard
cp "$binary" "$bin"
probe=(python3 bench/probe.py)

# shellcheck source=scripts/lib/pg.sh
source scripts/lib/pg.sh

server_pid="" pg_dsn="" url="" key=""
wrap=() # a command prefix for the measured command (perf stat, in diagnostics)
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

say() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }

# start_server DB LOG: a slotguard server on a free port; sets server_pid, url, key.
start_server() {
  local db=$1 log=$2 port
  "$bin" migrate --database "$db" 2>>"$log"
  key=$("$bin" keys create --role admin --database "$db" 2>>"$log")
  port=$(free_port)
  "$bin" serve --database "$db" --listen "127.0.0.1:$port" >>"$log" 2>&1 &
  server_pid=$!
  url=http://127.0.0.1:$port
  for _ in $(seq 1 200); do
    curl -fsS "$url/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "bench: slotguard did not come up; its log:" >&2
  tail -n 20 "$log" >&2
  return 1
}

# loadtest ID ARGS...: `slotguard loadtest` against the running server, probed.
loadtest() {
  local id=$1
  shift
  local pg=()
  if [[ -n "$pg_dsn" ]]; then
    pg=(--psql "$pg_bindir/psql" --dsn "$pg_dsn")
    [[ -n "${wrap[0]:-}" ]] && pg+=(--statements-out "$results/$id.statements.txt")
  fi
  "${probe[@]}" run --out "$results/$id.probe.json" --server-pid "$server_pid" "${pg[@]}" \
    --top-file "$results/$id.top.txt" --top-after "$top_after" -- \
    "${wrap[@]}" "$bin" loadtest --target "$url" --key "$key" --quiet \
    --report "$results/$id.report.json" "$@" >"$results/$id.txt" 2>&1 ||
    say "$id: loadtest exited non-zero (see $results/$id.txt)"
}

psql_() { PGOPTIONS="-c client_min_messages=warning" "$pg_bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }

# fresh_pg_db ID: (re)creates an empty database named after ID and prints its URL.
fresh_pg_db() {
  local db
  db=$(tr -c 'a-z0-9\n' _ <<<"$1")
  psql_ -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
  echo "postgres://postgres@127.0.0.1:$pg_port/$db"
}

# pg_raw MODE N SECONDS ID: pgbench with bench/pg_booking.sql on a fresh database.
pg_raw() {
  local mode=$1 n=$2 seconds=$3 id=$4 dsn hot=0
  [[ $mode == hot ]] && hot=1
  dsn=$(fresh_pg_db "$id")
  "$bin" migrate --database "$dsn" 2>>"$results/$id.txt"
  psql_ -d "$dsn" -c "INSERT INTO clinics SELECT 'bench-' || c, 'Bench', 'Asia/Kolkata', 0, 0, now(), now() FROM generate_series(0, 9) c;
    INSERT INTO doctors SELECT 'bench-' || c, 'dr-' || d, 'Doctor', 1, '{}', '{}', now(), now() FROM generate_series(0, 9) c, generate_series(0, 4) d;
    CHECKPOINT;"
  say "PostgreSQL $mode, $n clients: pgbench ${seconds}s ($id)"
  local statements=()
  [[ -n "${wrap[0]:-}" ]] && statements=(--statements-out "$results/$id.statements.txt")
  "${probe[@]}" run --out "$results/$id.probe.json" --psql "$pg_bindir/psql" --dsn "$dsn" "${statements[@]}" \
    --top-file "$results/$id.top.txt" --top-after "$top_after" -- \
    "${wrap[@]}" "$pg_bindir/pgbench" -n -M prepared -f bench/pg_booking.sql -D hot=$hot -D notify="${notify:-0}" \
    -c "$n" -j 2 -T "$seconds" -r -h 127.0.0.1 -p "$pg_port" -U postgres "${dsn##*/}" \
    >>"$results/$id.txt" 2>&1 ||
    say "$id: pgbench exited non-zero (see $results/$id.txt)"
}

# hot_day_script DATE: an artillery script that books the earliest free slot of the
# hot doctor on DATE.
hot_day_script() {
  cat >"$work/hot.yml" <<EOF
config:
  phases: [{duration: 1, arrivalRate: 1}]
scenarios:
  - flow:
      - post:
          url: /api/v1/appointments
          json: {clinicId: hot, doctorId: dr-0, date: "$1", bookedVia: bench}
EOF
}

# pg_sg MODE N SECONDS ID [FIRST_ROUND_SECONDS]: slotguard over HTTP on a fresh
# database. The hot doctor-day is booked in rounds (see BENCHMARKS.md): a doctor-day
# holds at most 1435 one-minute slots, so each round books a fresh date of the one
# doctor, without slotIndex (the earliest free slot), and ends before the day is full
# (refused requests on a full day would be extra work pgbench does not do); the rate
# counts each round's 201s over the time from its first request to its last 201. For
# the hot day SECONDS is how much of that time to collect.
pg_sg() {
  local mode=$1 n=$2 seconds=$3 id=$4 round_secs=${5:-1.5} round=0 dsn measured rate histories=()
  dsn=$(fresh_pg_db "$id")
  pg_dsn=$dsn
  start_server "$dsn" "$results/$id.server.log"
  psql_ -d "$dsn" -c "CHECKPOINT"
  if [[ $mode == spread ]]; then
    say "PostgreSQL spread, $n clients: slotguard ${seconds}s ($id)"
    loadtest "$id" --scenario spread --concurrency "$n" --duration "$seconds" ${wrap[0]:+--no-verify}
  else
    curl -fsS -o /dev/null -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
      "$url/api/v1/clinics" -d '{"id": "hot", "name": "Hot day", "walkInReserveRatio": 0, "minLeadMinutes": 0}'
    curl -fsS -o /dev/null -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
      "$url/api/v1/clinics/hot/doctors" -d "$(python3 -c 'import json
h = [{"from": "00:00", "to": "16:30"}, {"from": "16:30", "to": "23:55"}]
print(json.dumps({"id": "dr-0", "name": "Hot", "slotMinutes": 1,
                  "availability": {d: h for d in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}}))')"
    say "PostgreSQL hot doctor-day, $n clients: slotguard rounds until ${seconds}s measured ($id)"
    while :; do
      hot_day_script "$(date -d "+$((40 + round)) days" +%F)"
      if [[ $round == 0 ]]; then # warm-up (connections, caches), not counted
        local saved=("${wrap[@]}")
        wrap=()
        loadtest "$id-warmup" --script "$work/hot.yml" --concurrency "$n" --duration 1 --no-verify
        wrap=("${saved[@]}")
      else
        loadtest "$id-r$round" --script "$work/hot.yml" --concurrency "$n" --duration "$round_secs" \
          --history "$results/$id-r$round.history.jsonl" ${wrap[0]:+--no-verify}
        histories+=("$results/$id-r$round.history.jsonl")
        "${probe[@]}" hot-rate --out "$results/$id.rate.json" "${histories[@]}" >/dev/null
        read -r measured rate < <(python3 -c 'import json, sys
r = json.load(open(sys.argv[1])); print(r["seconds"], r["bookingsPerSecond"])' "$results/$id.rate.json")
        python3 -c 'import sys; sys.exit(float(sys.argv[1]) >= float(sys.argv[2]))' "$measured" "$seconds" || break
        [[ $round -ge 25 ]] && break
        # Most of a day at the rate seen so far, but not all of it.
        round_secs=$(python3 -c 'import sys
r = float(sys.argv[1]); print(round(min(30, 0.8 * 1435 / r), 1) if r > 0 else 1.5)' "$rate")
      fi
      round=$((round + 1))
    done
  fi
  stop_server
  pg_dsn=""
}

# sqlite_raw SECONDS ID: bench/sqlite_raw.py on a fresh file migrated by slotguard.
sqlite_raw() {
  rm -f "$work/$2.db" "$work/$2.db"-*
  "$bin" migrate --database "$work/$2.db" 2>/dev/null
  say "SQLite raw: one connection, synchronous=FULL, ${1}s ($2)"
  "${probe[@]}" run --out "$results/$2.probe.json" -- \
    "${wrap[@]}" python3 bench/sqlite_raw.py --db "$work/$2.db" --seconds "$1" --out "$results/$2.json" \
    >"$results/$2.txt" 2>&1 || say "$2: bench/sqlite_raw.py failed (see $results/$2.txt)"
}

# sqlite_sg N SECONDS ID: slotguard on a fresh SQLite file, the spread scenario.
sqlite_sg() {
  rm -f "$work/$3.db" "$work/$3.db"-*
  start_server "$work/$3.db" "$results/$3.server.log"
  say "SQLite spread, $1 clients: slotguard ${2}s ($3)"
  loadtest "$3" --scenario spread --concurrency "$1" --duration "$2" ${wrap[0]:+--no-verify}
  stop_server
}

# plan STORE: the clinic's plan, 10 arrivals/s on slot 5 of one doctor-day, on a
# fresh database.
plan() {
  local db
  if [[ $1 == postgres ]]; then
    db=$(fresh_pg_db plan_postgres)
  else
    db=$work/plan.db
    rm -f "$db" "$db"-*
  fi
  start_server "$db" "$results/plan-$1.server.log"
  say "$1: the clinic's plan, 10/s for ${plan_secs}s on slot 5"
  local top_after=$((plan_secs / 2))
  loadtest "plan-$1" --scenario same-slot --rate 10 --duration "$plan_secs"
  stop_server
}

# Other processes (compilers, tests) share the two cores. A measurement during which
# they took more than max_noise % of the machine is taken again, up to its tries.
max_noise=10
noise_of() {
  local files=() id
  shopt -s nullglob
  for id in "$@"; do files+=("$results/$id.probe.json" "$results/$id"-r[0-9]*.probe.json); done
  shopt -u nullglob
  "${probe[@]}" noise "${files[@]}"
}
forget() {
  local id
  for id in "$@"; do rm -f "$results/$id".* "$results/$id"-r[0-9]*.* "$results/$id"-warmup.*; done
}
# measure TRIES ID... -- CMD...: runs CMD, which writes the runs ID..., and again while
# other processes took more than max_noise % of the CPU during any of them.
measure() {
  local tries=$1 ids=() attempt noise
  shift
  while [[ $1 != -- ]]; do ids+=("$1"); shift; done
  shift
  for ((attempt = 1; ; attempt++)); do
    "$@"
    noise=$(noise_of "${ids[@]}")
    ((noise <= max_noise || attempt >= tries)) && break
    say "other processes took $noise % of the CPU during ${ids[*]}: measuring again"
    forget "${ids[@]}"
    "${probe[@]}" quiet --max-wait 120
  done
}

# pg_pair MODE N TRIAL: pgbench, then slotguard.
pg_pair() {
  pg_raw "$1" "$2" "$secs" "pg-$1-$2-raw-t$3"
  if [[ $1 == spread ]]; then
    pg_sg spread "$2" "$secs" "pg-spread-$2-sg-t$3"
  else
    pg_sg hot "$2" "$hot_secs" "pg-hot-$2-sg-t$3"
  fi
}
# sqlite_all TRIAL: the raw loop, then slotguard at 8, 32 and 64 clients.
sqlite_all() {
  sqlite_raw "$sqlite_secs" "sqlite-raw-t$1"
  for n in 8 32 64; do
    sqlite_sg "$n" "$secs" "sqlite-spread-$n-sg-t$1"
  done
}

# ---- the machine ----
[[ $wait_quiet == 1 ]] && "${probe[@]}" quiet --max-wait 600
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$results/machine.json" "$quick" "$load_before" <<'EOF'
import datetime, json, os, subprocess, sys
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rev = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
built = datetime.datetime.fromtimestamp(os.stat("target/release/slotguard").st_mtime).astimezone()
json.dump({"nproc": os.cpu_count(), "cpu": cpu, "loadBefore": sys.argv[3],
           "binaryBuilt": built.isoformat(timespec="seconds"),
           "mode": "quick" if sys.argv[2] == "1" else "full", "git": rev,
           "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")},
          open(sys.argv[1], "w"), indent=2)
EOF
say "$(nproc) cores, load average $load_before"
"${probe[@]}" fsync --dir "$work" --out "$results/fsync.json"

if wants pg || wants plan || wants diag; then
  PG_DURABLE=1 start_pg || { echo "bench: PostgreSQL: $skip_reason" >&2; exit 1; }
  psql_ -d postgres -At -c "SELECT 'PostgreSQL ' || current_setting('server_version')
    || ': fsync=' || current_setting('fsync') || ', synchronous_commit=' || current_setting('synchronous_commit')
    || ', full_page_writes=' || current_setting('full_page_writes') || ', wal_sync_method=' || current_setting('wal_sync_method')
    || ', shared_buffers=' || current_setting('shared_buffers')" | tee "$results/postgres.txt" >&2
fi

# ---- measured runs ----
if wants pg; then
  for mode in spread hot; do
    n_trials=$trials
    [[ $mode == hot ]] && n_trials=$hot_trials
    for n in $clients; do
      for ((t = 1; t <= n_trials; t++)); do
        measure 2 "pg-$mode-$n-raw-t$t" "pg-$mode-$n-sg-t$t" -- pg_pair "$mode" "$n" "$t"
      done
    done
  done
fi
if wants sqlite; then
  for ((t = 1; t <= trials; t++)); do
    measure 2 "sqlite-raw-t$t" "sqlite-spread-8-sg-t$t" "sqlite-spread-32-sg-t$t" "sqlite-spread-64-sg-t$t" \
      -- sqlite_all "$t"
  done
fi
if wants plan; then
  measure 2 plan-postgres -- plan postgres
  measure 2 plan-sqlite -- plan sqlite
fi

# ---- diagnostics: where the time goes ----
# Short runs at 32 clients again, this time counting system-wide (perf stat -a: every
# process on the machine) fsync/fdatasync calls and socket sends per booking. Counting
# syscalls slows them a little, so these runs are kept apart from the measured ones.
if wants diag; then
  if perf stat -a -e syscalls:sys_enter_fdatasync -- true >/dev/null 2>&1; then
    perf_wrap() {
      wrap=(perf stat -a -x, -o "$results/$1.perf"
        -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync,syscalls:sys_enter_sendto,syscalls:sys_enter_writev --)
    }
    # pg_stat_statements counts the statements per booking (databases created from
    # now on have it); loading it needs a restart.
    printf "\nshared_preload_libraries = 'pg_stat_statements'\n" \
      >>"$pg_tmp/data/postgresql.conf"
    restart_pg
    psql_ -d template1 -c "CREATE EXTENSION pg_stat_statements"
    for mode in spread hot; do
      perf_wrap "diag-pg-$mode-raw"
      pg_raw "$mode" 32 "$diag_secs" "diag-pg-$mode-raw"
      # The same with a pg_notify in the transaction, as slotguard's detection hook has.
      perf_wrap "diag-pg-$mode-raw-notify"
      notify=1 pg_raw "$mode" 32 "$diag_secs" "diag-pg-$mode-raw-notify"
      perf_wrap "diag-pg-$mode-sg"
      if [[ $mode == spread ]]; then
        pg_sg spread 32 "$diag_secs" "diag-pg-spread-sg"
      else # one round, too short to fill the day (refusals after it would skew the counts)
        pg_sg hot 32 0 "diag-pg-hot-sg" "$(python3 -c 'import json, sys
try:
    r = json.load(open(sys.argv[1]))["bookingsPerSecond"]
    print(round(min(float(sys.argv[2]), 0.7 * 1435 / r), 1))
except Exception:
    print(2)' "$results/pg-hot-32-sg-t1.rate.json" "$diag_secs")"
      fi
    done
    perf_wrap diag-sqlite-raw
    sqlite_raw "$diag_secs" diag-sqlite-raw
    perf_wrap diag-sqlite-sg
    sqlite_sg 32 "$diag_secs" diag-sqlite-sg
    wrap=()
  else
    say "diag: perf cannot count syscall tracepoints here; skipped"
  fi
fi
stop_pg

echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$results/postgres.txt"
"${probe[@]}" table "$results" | tee "$results/summary.md"
