#!/usr/bin/env bash
# Detection under a burst (issue 13, item 11): RATE watched documents a second for
# SECONDS seconds, each its own PUT through the watch API (as a Firestore forwarder
# sends them), over CONNECTIONS keep-alive connections, to a release server on SQLite
# and on a throwaway PostgreSQL (fsync on). One document in 20 lands on the slot the
# document before it holds: a new duplicate, whose time from its commit to
# its incident the server records (`/healthz` detectionLatencyMs). Prints the rate
# reached, the answers, and detection's p50/p99/max. Target: p99 < 250 ms.
#   bench/burst.sh [RATE] [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rate=${1:-2000}
seconds=${2:-30}
connections=${3:-32}
bin=${SLOTGUARD_BIN:-target/release/slotguard}
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
  python3 - "$base" "$key" "$rate" "$seconds" "$connections" "$label" <<'PY'
import asyncio, json, sys, time, urllib.request
base, key, rate, seconds, conns, label = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
host, port = base.removeprefix("http://").split(":")
total = int(rate * seconds)
statuses = {}
lat = []

def doc(i):
    # 200 doctors × 5 days: document i is in slot i // 1000 of its doctor-day, so no
    # two share a slot, except every 20th, which takes the slot of the document just
    # before it (with a token of its own): one new double booking per 20 documents.
    j = i - 1 if i % 20 == 19 else i
    doctor, day, slot = j % 200, (j // 200) % 5, j // 1000
    return {"clinicId": "burst", "doctorId": f"dr-{doctor}", "date": f"2026-12-{1 + day:02d}",
            "slotIndex": slot, "tokenNumber": f"B-{i}", "status": "Pending",
            "createdAt": "2026-11-29T00:00:00Z"}

async def worker(queue, start):
    reader, writer = await asyncio.open_connection(host, int(port))
    while True:
        i = await queue.get()
        if i is None:
            break
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        body = json.dumps(doc(i)).encode()
        writer.write((f"PUT /api/v1/watch/burst/appointments/doc-{i} HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        await writer.drain()
        t = time.perf_counter()
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        lat.append(time.perf_counter() - t)
        statuses[status] = statuses.get(status, 0) + 1
    writer.close()

async def main():
    queue = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    for _ in range(conns):
        queue.put_nowait(None)
    start = time.perf_counter() + 0.2
    await asyncio.gather(*(worker(queue, start) for _ in range(conns)))
    return time.perf_counter() - start

took = asyncio.run(main())
time.sleep(3)
req = urllib.request.Request(base + "/healthz")
health = json.load(urllib.request.urlopen(req))["detectionLatencyMs"]
lat.sort()
p99_put = 1000 * lat[int(len(lat) * 0.99) - 1]
print(f"| {label} | {total:,} in {took:.1f} s = {total / took:,.0f}/s | {statuses} | {p99_put:.1f} | "
      f"{health['incidents']:,} | {health['p50']} | {health['p99']} | {health['max']} |")
PY
  kill %1 2>/dev/null || true
  wait 2>/dev/null || true
}

echo "| store | documents sent | answers | PUT p99 ms | incidents | detection p50 ms | p99 ms | max ms |"
echo "|---|---|---|---:|---:|---:|---:|---:|"
measure "$work/burst.db" SQLite
if PG_DURABLE=1 start_pg; then
  measure "postgres://postgres@127.0.0.1:$pg_port/postgres" PostgreSQL
else
  echo "PostgreSQL skipped: $skip_reason" >&2
fi
