#!/usr/bin/env bash
# A release slotguard server for benchmarks. Source it (after setting $bin and $work),
# then:
#   serve_on DB   start `$bin serve` on database DB (its output in $work/out and
#                 $work/err), wait until it listens, and set $base (its URL) and
#                 $key (a fresh admin key). Stop it with `kill %1`.
serve_on() {
  local db=$1
  "$bin" serve --database "$db" --listen 127.0.0.1:0 >"$work/out" 2>"$work/err" &
  for _ in $(seq 100); do grep -q 'listening on' "$work/err" 2>/dev/null && break; sleep 0.1; done
  base=$(sed -n 's/^slotguard listening on //p' "$work/err")
  key=$("$bin" keys create --role admin --database "$db" 2>/dev/null)
}
