#!/usr/bin/env bash
# The same artillery scripts run by real artillery 2 and by `slotguard loadtest
# --script`, each against its own fresh `slotguard serve --demo` on this machine: the
# status counts must be the same. See docs/PROOF.md for the recorded result.
#
#   bench/artillery_compare.sh [--quick]
#
# Scripts (tests/data/artillery/):
#   clinic-rush.yml  the clinic's own script with only the target, a key, the day and a
#                    patient's name added: 60 s at 10 arrivals/s, everyone on Asha
#                    Menon's slot 5 (--quick: 5 s).
#   clinic-rush-ramp.yml  the same, after a ramp from 1 to 6 arrivals/s over 4 s,
#                    then 20 s at 10/s (--quick: 3 s).
#   two-step.yml     two POSTs per virtual user in order with a think between,
#                    config.variables, config.defaults.headers, a CSV payload read in
#                    sequence, $env, $randomString and $randomNumber.
#
# Prints a markdown table and exits 1 when any count differs. Raw outputs (artillery's
# JSON report, slotguard's report, server logs) stay in the temporary folder it names.
#
# Needs node 20 and npm: artillery@2 is installed once into
# ${ARTILLERY_HOME:-~/.cache/slotguard-bench/artillery} (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1:
# its browser engine is not used; telemetry off). Also curl, python3 and
# target/release/slotguard (built with `cargo build --release` if missing), or the
# binary SLOTGUARD_BIN names.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=0
case "${1:-}" in
  --quick) quick=1 ;;
  "") ;;
  -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  *) echo "usage: bench/artillery_compare.sh [--quick]" >&2; exit 2 ;;
esac

# shellcheck source=scripts/lib/pg.sh
source scripts/lib/pg.sh # free_port

say() { printf '[artillery-compare %s] %s\n' "$(date +%T)" "$*" >&2; }

source_bin=${SLOTGUARD_BIN:-target/release/slotguard}
[[ -n ${SLOTGUARD_BIN:-} || -x $source_bin ]] || cargo build --release
work=$(mktemp -d /tmp/slotguard-artillery.XXXXXX)
bin=$work/slotguard
cp "$source_bin" "$bin"

artillery_home=${ARTILLERY_HOME:-$HOME/.cache/slotguard-bench/artillery}
artillery=$artillery_home/node_modules/.bin/artillery
if [[ ! -x $artillery ]]; then
  say "installing artillery@2 into $artillery_home (once)"
  mkdir -p "$artillery_home"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$artillery_home" --no-audit --no-fund artillery@2 \
    >"$work/npm-install.log" 2>&1 || {
    echo "artillery-compare: npm install artillery@2 failed; see $work/npm-install.log" >&2
    exit 1
  }
fi
export ARTILLERY_DISABLE_TELEMETRY=true
artillery_version=$("$artillery" --version 2>/dev/null | awk '/^Artillery:/ { print $2 }')

# The day both book: the day after tomorrow in India, clear of what --demo seeds
# (today and tomorrow).
BOOKING_DATE=$(python3 -c 'import datetime, zoneinfo
now = datetime.datetime.now(zoneinfo.ZoneInfo("Asia/Kolkata"))
print((now + datetime.timedelta(days=2)).date())')
export BOOKING_DATE

# The clinic's script with only what it leaves out added: a target (given on the
# command line to both tools), a key, the day and a patient's name.
python3 - "$quick" tests/data/artillery/clinic-rush.yml "$work/clinic-rush.yml" <<'EOF'
import sys
quick, source, filled = sys.argv[1] == "1", sys.argv[2], sys.argv[3]
text = open(source).read()
def once(old, new):
    global text
    assert text.count(old) == 1, old
    text = text.replace(old, new)
once('  target: "http://localhost:3000"\n',
     '  target: "http://localhost:3000"\n'
     '  defaults:\n    headers:\n      Authorization: "Bearer {{ $env.SLOTGUARD_KEY }}"\n')
once('            slotIndex: 5\n',
     '            slotIndex: 5\n'
     '            date: "{{ $env.BOOKING_DATE }}"\n'
     '            patientName: "Rush patient {{ $randomString(6) }}"\n')
if quick:
    once('    - duration: 60\n', '    - duration: 5\n')
open(filled, "w").write(text)
# The same with a ramp before the rush: artillery's per-second ramp arithmetic.
once('    - duration: 5\n' if quick else '    - duration: 60\n',
     '    - duration: 4\n      arrivalRate: 1\n      rampTo: 6\n      name: "Doors open"\n'
     + ('    - duration: 3\n' if quick else '    - duration: 20\n'))
open(filled.replace(".yml", "-ramp.yml"), "w").write(text)
EOF
cp tests/data/artillery/two-step.yml tests/data/artillery/patients.csv "$work/"

# counts.py TOOL REPORT: "requests|status: count, …" from either tool's JSON report.
cat >"$work/counts.py" <<'EOF'
import json, sys

tool, path = sys.argv[1], sys.argv[2]
report = json.load(open(path))
codes, others = {}, {}
if tool == "artillery":
    counters = report["aggregate"]["counters"]
    for name, n in counters.items():
        if name.startswith("http.codes."):
            codes[name.rsplit(".", 1)[1]] = n
        elif name.startswith("errors."):
            others[name.split(".", 1)[1]] = n
    requests = sum(codes.values()) + sum(others.values())
else:
    summary = report["summary"]
    requests = summary["requests"]
    for label, n in summary["byClass"].items():
        if label in ("201", "2xx"):
            codes[label] = n
    for answer in summary["answers"]:
        status = str(answer["status"])
        codes[status] = codes.get(status, 0) + answer["count"]
    unanswered = requests - sum(codes.values())
    if unanswered:
        others["no answer"] = unanswered
parts = [f"{k}: {v}" for k, v in sorted(codes.items())]
parts += [f"{k}: {v}" for k, v in sorted(others.items())]
print(str(requests) + "|" + ", ".join(parts))
EOF

server_pid=""
stop_server() {
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap stop_server EXIT

# start_server ID: a fresh `serve --demo` on its own database; sets url and SLOTGUARD_KEY.
start_server() {
  local db=$work/$1.db port
  "$bin" migrate --database "$db" 2>>"$work/$1.server.log"
  SLOTGUARD_KEY=$("$bin" keys create --role admin --database "$db" 2>>"$work/$1.server.log")
  export SLOTGUARD_KEY
  port=$(free_port)
  "$bin" serve --demo --database "$db" --listen "127.0.0.1:$port" >>"$work/$1.server.log" 2>&1 &
  server_pid=$!
  url=http://127.0.0.1:$port
  for _ in $(seq 1 200); do
    curl -fsS "$url/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "artillery-compare: slotguard did not come up; see $work/$1.server.log" >&2
  exit 1
}

# booked: occupying appointments of demo-clinic on BOOKING_DATE.
booked() {
  curl -fsS -H "Authorization: Bearer $SLOTGUARD_KEY" \
    "$url/api/v1/appointments?clinicId=demo-clinic&date=$BOOKING_DATE" |
    python3 -c 'import json, sys
print(sum(a["status"] not in ("Cancelled", "No-show") for a in json.load(sys.stdin)["appointments"]))'
}

# run TOOL SCRIPT: one tool on one script against a fresh server; prints
# "requests|status counts|rows booked".
run() {
  local tool=$1 script=$2 id counts
  id=$tool-$(basename "$script" .yml)
  start_server "$id"
  say "$id against $url"
  if [[ $tool == artillery ]]; then
    "$artillery" run --target "$url" --output "$work/$id.json" "$script" >"$work/$id.txt" 2>&1 ||
      say "$id: artillery exited non-zero (see $work/$id.txt)"
  else
    "$bin" loadtest --script "$script" --target "$url" --quiet --report "$work/$id.json" \
      >"$work/$id.txt" 2>&1 || say "$id: slotguard loadtest exited non-zero (see $work/$id.txt)"
  fi
  counts=$(python3 "$work/counts.py" "$tool" "$work/$id.json") || {
    echo "artillery-compare: no report from $id; see $work/$id.txt" >&2
    exit 1
  }
  printf '%s|%s\n' "$counts" "$(booked)"
  stop_server
}

rows=() differ=0
for script in "$work/clinic-rush.yml" "$work/clinic-rush-ramp.yml" "$work/two-step.yml"; do
  a=$(run artillery "$script")
  s=$(run slotguard "$script")
  name=$(basename "$script")
  same=yes
  [[ ${a#*|} == "${s#*|}" ]] || { same=NO; differ=1; }
  rows+=("| $name | artillery $artillery_version | ${a//|/ | } | |")
  rows+=("| $name | slotguard loadtest | ${s//|/ | } | $same |")
done

echo
echo "Booking day $BOOKING_DATE; raw outputs in $work"
echo
echo "| script | run by | requests | status counts | rows booked | same counts |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit "$differ"
