#!/usr/bin/env bash
# Detection latency: commit of a duplicate's newest member → incident saved, as the
# server measures it (`/healthz` detectionLatencyMs). Sends PAIRS duplicate pairs
# through the watch API at RATE documents/s to a release server on SQLite and on a
# throwaway PostgreSQL (fsync on; skipped when none can be started), then prints
# p50/p99/max. Target: p99 < 250 ms.
#   bench/detection.sh [PAIRS] [RATE]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
pairs=${1:-200}
rate=${2:-40}
bin=target/release/slotguard
[[ -x $bin ]] || cargo build --release -q
# shellcheck source=scripts/lib/pg.sh
source scripts/lib/pg.sh
# shellcheck source=scripts/lib/serve.sh
source scripts/lib/serve.sh
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; stop_pg; rm -rf "$work"' EXIT

measure() {
  local db=$1 label=$2
  local base key
  serve_on "$db"
  python3 - "$base" "$key" "$pairs" "$rate" "$label" <<'PY'
import json, sys, time, urllib.request
base, key, pairs, rate, label = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
def call(method, path, body=None):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)
start = time.time()
for i in range(pairs):
    for j in range(2):
        doc = {"clinicId": "bench", "doctorId": f"dr-{i % 50}", "date": f"2026-12-{1 + i // 50:02d}",
               "slotIndex": i, "tokenNumber": f"A1-{i + 1:03}", "status": "Pending"}
        call("PUT", f"/api/v1/watch/bench/appointments/doc-{i}-{j}", doc)
        due = start + (2 * i + j + 1) / rate
        time.sleep(max(0, due - time.time()))
time.sleep(1.5)
lat = call("GET", "/healthz")["detectionLatencyMs"]
print(f"| {label} | {pairs} | {lat['incidents']} | {lat['p50']} | {lat['p99']} | {lat['max']} |")
PY
  kill %1 2>/dev/null || true
  wait 2>/dev/null || true
}

echo "| store | duplicate pairs | incidents | p50 ms | p99 ms | max ms |"
echo "|---|---|---|---|---|---|"
measure "$work/detect.db" sqlite
if PG_DURABLE=1 start_pg; then
  measure "postgres://postgres@127.0.0.1:$pg_port/postgres" postgres
else
  echo "PostgreSQL skipped: $skip_reason" >&2
fi
