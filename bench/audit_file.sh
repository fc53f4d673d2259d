#!/usr/bin/env bash
# `slotguard audit --file` against DuckDB's GROUP BY over one generated JSON Lines
# export. Generates the file once (bench/data/, ignored by git), installs DuckDB from
# PyPI into bench/.venv once, builds slotguard in release, then prints records/s for
# slotguard on one core, DuckDB with one thread and with its default thread count.
#
#   bench/audit_file.sh [RECORDS]        # default 5000000 (about 2.7 GB)
set -euo pipefail
cd "$(dirname "$0")/.."

records=${1:-5000000}
data=bench/data
file=$data/appointments-$records.jsonl
venv=bench/.venv

mkdir -p "$data"
if [ ! -f "$file" ]; then
  python3 bench/gen_appointments.py "$file.partial" --records "$records" --duplicates 25
  mv "$file.partial" "$file"
fi
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import duckdb' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet duckdb
fi
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/slotguard

# One core for slotguard and one-thread DuckDB, when taskset is there.
pin=""
if command -v taskset >/dev/null; then pin="taskset -c 0"; fi
# Both read the file from the page cache, not the disk.
cat "$file" > /dev/null

echo "machine: $(nproc) cores, $(uname -m), load $(cut -d' ' -f1-3 /proc/loadavg)"
"$venv/bin/python" bench/audit_file.py "$file" --slotguard "$bin" --pin "$pin" --runs 3
