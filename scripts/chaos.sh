#!/usr/bin/env bash
# Fault injection: load a slotguard server while SIGKILLing and restarting it (and, on
# PostgreSQL, crashing and restarting the database), then prove with `slotguard check`
# that no acknowledged booking was lost and nothing was double-booked.
#
#   scripts/chaos.sh [--short] [--store sqlite|postgres|both] [--seconds N] [--kills N] [--rate R]
#
# Default (the long run): both stores, 120 s at 40 arrivals/s, 8 kills. --short (what
# CI runs after the tests): 16 s, 3 kills. Exit 0 only when every check is clean.
# SLOTGUARD_BIN picks the binary (default target/debug/slotguard, built if missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

stores=both seconds=120 kills=8 rate=40
while [[ $# -gt 0 ]]; do
  case "$1" in
    --short) seconds=16 kills=3 ;;
    --store) stores=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --kills) kills=$2; shift ;;
    --rate) rate=$2; shift ;;
    *) echo "usage: scripts/chaos.sh [--short] [--store sqlite|postgres|both] [--seconds N] [--kills N] [--rate R]" >&2; exit 2 ;;
  esac
  shift
done

bin=${SLOTGUARD_BIN:-${CARGO_TARGET_DIR:-target}/debug/slotguard}
[[ -x "$bin" ]] || cargo build -q
# shellcheck source=scripts/lib/pg.sh
source scripts/lib/pg.sh

work=$(mktemp -d /tmp/slotguard-chaos.XXXXXX)
server_pid=""
cleanup() {
  [[ -n "$server_pid" ]] && kill -9 "$server_pid" 2>/dev/null || true
  stop_pg
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_server() {
  "$bin" serve --database "$db" --listen "127.0.0.1:$port" >>"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 200); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "chaos: slotguard did not come up; its log:" >&2
  tail -n 20 "$work/server.log" >&2
  return 1
}

chaos_run() {
  local store=$1 k interval loadtest_pid verdict=0
  case "$store" in
    sqlite) db=$work/chaos.db ;;
    postgres)
      if [[ -z "$pg_tmp" ]]; then
        PG_DURABLE=1 start_pg || { echo "chaos: PostgreSQL: $skip_reason" >&2; return 1; }
      fi
      db=postgres://postgres@127.0.0.1:$pg_port/postgres ;;
  esac
  port=$(free_port)
  "$bin" migrate --database "$db" 2>/dev/null
  key=$("$bin" keys create --role admin --database "$db" 2>/dev/null)
  start_server
  echo "chaos[$store]: ${seconds}s of the rush scenario at ${rate}/s, $kills SIGKILLs of slotguard$([[ $store == postgres ]] && echo ", every other one with a PostgreSQL crash")" >&2
  "$bin" loadtest --target "http://127.0.0.1:$port" --key "$key" --scenario rush \
    --rate "$rate" --duration "$seconds" --timeout 3 --quiet --no-verify \
    --history "$work/$store.jsonl" --report "$work/$store-report.json" >"$work/$store-loadtest.txt" 2>&1 &
  loadtest_pid=$!
  interval=$(python3 -c "print($seconds / ($kills + 1))")
  for ((k = 1; k <= kills; k++)); do
    sleep "$interval"
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    if [[ $store == postgres && $((k % 2)) -eq 0 ]]; then
      restart_pg || { echo "chaos: PostgreSQL did not restart" >&2; return 1; }
    fi
    start_server
  done
  wait "$loadtest_pid" || true
  sed -n '2,4p' "$work/$store-loadtest.txt" | sed "s/^/chaos[$store]: /" >&2
  "$bin" check --history "$work/$store.jsonl" --database "$db" || verdict=$?
  kill -9 "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  return "$verdict"
}

status=0
case "$stores" in
  sqlite | postgres) chaos_run "$stores" || status=1 ;;
  both) chaos_run sqlite || status=1; chaos_run postgres || status=1 ;;
  *) echo "--store must be sqlite, postgres or both" >&2; exit 2 ;;
esac
if [[ $status -eq 0 ]]; then
  echo "chaos: no lost acknowledged booking, no duplicate" >&2
else
  echo "chaos: FAILED" >&2
fi
exit "$status"
