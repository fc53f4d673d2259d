#!/usr/bin/env python3
"""Times `slotguard audit --file` and DuckDB's GROUP BY ... HAVING COUNT(*) > 1 over the
same JSON Lines file and prints records/s and the ratios; bench/audit_file.sh sets
up and calls it. Each side reads the whole file on every run (no cached tables),
from the page cache; the best of --runs is kept.

    audit_file.py FILE --slotguard BIN [--runs 3] [--pin "taskset -c 0"]
    audit_file.py duckdb FILE THREADS    # one DuckDB run: prints seconds and groups
"""

import json
import os
import resource
import shlex
import subprocess
import sys
import time

# The audit's rules in SQL: occupying = every status but Cancelled and No-show, and
# not moved away by a Kloqo break; a break placeholder holds its slot but no token.
QUERY = """
WITH rows AS (
  SELECT * FROM read_json('{file}', format = 'newline_delimited', columns = {{
    id: 'VARCHAR', clinicId: 'VARCHAR', doctorId: 'VARCHAR', date: 'VARCHAR',
    slotIndex: 'BIGINT', tokenNumber: 'VARCHAR', status: 'VARCHAR',
    bookedVia: 'VARCHAR', cancelledByBreak: 'BOOLEAN'}})
), occupying AS (
  SELECT *, (tokenNumber = 'Break' OR bookedVia = 'BreakBlock') IS TRUE AS is_break
  FROM rows
  WHERE status NOT IN ('Cancelled', 'No-show')
    AND NOT ((cancelledByBreak IS TRUE) AND NOT ((tokenNumber = 'Break' OR bookedVia = 'BreakBlock') IS TRUE))
)
SELECT 'slot' AS kind, clinicId, doctorId, date, CAST(slotIndex AS VARCHAR) AS key, COUNT(*) AS n
  FROM occupying GROUP BY clinicId, doctorId, date, slotIndex HAVING COUNT(*) > 1
UNION ALL
SELECT 'token', clinicId, doctorId, date, tokenNumber, COUNT(*)
  FROM occupying WHERE tokenNumber IS NOT NULL AND NOT is_break
  GROUP BY clinicId, doctorId, date, tokenNumber HAVING COUNT(*) > 1
"""


def duckdb_run(file, threads):
    import duckdb

    con = duckdb.connect()
    if threads != "default":
        con.execute(f"SET threads = {int(threads)}")
    used = con.execute("SELECT current_setting('threads')").fetchone()[0]
    start = time.perf_counter()
    groups = con.execute(QUERY.format(file=file.replace("'", "''"))).fetchall()
    seconds = time.perf_counter() - start
    slots = sum(1 for g in groups if g[0] == "slot")
    print(json.dumps({"seconds": seconds, "threads": used, "slot_groups": slots, "token_groups": len(groups) - slots}))


def count_records(file):
    """Non-blank lines: the records of a JSON Lines file."""
    with open(file, "rb") as lines:
        return sum(1 for line in lines if line.strip())


def best(runs, command):
    results = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        results.append((time.perf_counter() - start, done))
    return min(results, key=lambda r: r[0])


def main():
    if sys.argv[1] == "duckdb":
        return duckdb_run(sys.argv[2], sys.argv[3])
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--slotguard", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pin", default="")
    args = parser.parse_args()
    pin = shlex.split(args.pin)
    size = os.path.getsize(args.file)

    seconds, done = best(args.runs, pin + [args.slotguard, "audit", "--file", args.file, "--output", "json"])
    # Only slotguard has run as a child so far: its peak memory.
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if done.returncode not in (0, 1):
        sys.exit(f"slotguard audit failed: {done.stderr}")
    report = json.loads(done.stdout)
    # The records read, not the appointments checked (breaks and older copies of an
    # id are read but not counted).
    records = count_records(args.file)
    slotguard = records / seconds

    duck = {}
    for label, threads, prefix in [("1 thread", "1", pin), ("all threads", "default", [])]:
        seconds_d, done_d = best(args.runs, prefix + [sys.executable, __file__, "duckdb", args.file, threads])
        if done_d.returncode != 0:
            sys.exit(f"duckdb failed: {done_d.stderr}")
        run = json.loads(done_d.stdout)
        # In-process query time: the interpreter's start is not DuckDB's work.
        duck[label] = (records / run["seconds"], run)

    one, all_threads = duck["1 thread"], duck["all threads"]
    print(f"file: {args.file} ({size / 1e9:.2f} GB, {records} records)")
    print(f"slotguard audit --file (1 core): {slotguard:,.0f} records/s, "
          f"{report['counts']['duplicateGroups']} duplicate groups "
          f"({report['counts']['extraRows']} extra rows, {report['counts']['affectedRows']} affected), "
          f"{seconds:.2f} s, peak {peak_mb:.0f} MB")
    print(f"DuckDB, 1 thread:                {one[0]:,.0f} records/s, {one[1]['seconds']:.2f} s, "
          f"{one[1]['slot_groups']} slot + {one[1]['token_groups']} token groups")
    print(f"DuckDB, {all_threads[1]['threads']} threads (default):     {all_threads[0]:,.0f} records/s, "
          f"{all_threads[1]['seconds']:.2f} s")
    print(f"ratio slotguard / DuckDB 1 thread:   {slotguard / one[0]:.2f}")
    print(f"ratio slotguard / DuckDB {all_threads[1]['threads']} threads:  {slotguard / all_threads[0]:.2f}")


if __name__ == "__main__":
    main()
