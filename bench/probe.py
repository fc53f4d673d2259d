#!/usr/bin/env python3
"""Measuring helpers for bench/run.sh (stdlib only).

    probe.py run --out F.json [--server-pid P] [--psql PSQL --dsn URL] [--top-file F --top-after S] -- CMD...
        Runs CMD and records, over its run: wall time, the CPU time CMD and its children
        used (the load generator), the CPU time of the server process P, the machine's
        busy and iowait share of all cores (/proc/stat), the server's VmHWM/VmRSS at the
        end, and with --dsn PostgreSQL's commits and WAL fsyncs (pg_stat_database,
        pg_stat_wal). Exits with CMD's exit code.
    probe.py hot-rate --out F.json HISTORY.jsonl...
        Successful bookings per second of the hot doctor-day rounds: per round, the 201s
        over the span from its first request to its last 201 (the day is full after it).
    probe.py table DIR
        The markdown tables of everything measured in DIR.
    probe.py fsync --dir DIR --out F.json
        Latency of a 4 KiB write + fdatasync in DIR (the disk under the databases).
    probe.py noise PROBE.json...
        The most CPU other processes took in any of these runs (% of all cores).
    probe.py quiet [--max-wait S]
        Waits until under 10 % of the machine is busy over 5 s (at most S seconds).
"""

import glob
import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime

TICK = os.sysconf("SC_CLK_TCK")


def machine_cpu():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle, iowait = fields[3], fields[4]
    return {"total": sum(fields[:8]), "idle": idle, "iowait": iowait}


def process_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            after_comm = f.read().rsplit(")", 1)[1].split()
        return (int(after_comm[11]) + int(after_comm[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def process_memory(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    out[key + "kB"] = int(value.split()[0])
    except OSError:
        pass
    return out


def pg_stats(psql, dsn):
    sql = (
        "SELECT (SELECT sum(xact_commit) FROM pg_stat_database), wal_sync, wal_write, "
        "wal_records FROM pg_stat_wal"
    )
    try:
        out = subprocess.run(
            [psql, "-X", "-At", "-F", " ", "-d", dsn, "-c", sql],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.split()
        return dict(zip(["commits", "walSyncs", "walWrites", "walRecords"], map(int, out)))
    except (subprocess.SubprocessError, ValueError, OSError):
        return None


STATEMENTS = (
    "SELECT calls, rows, round(total_exec_time::numeric, 1) AS ms, regexp_replace(query, '\\s+', ' ', 'g') "
    "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "ORDER BY calls DESC"
)


def psql_run(psql, dsn, sql):
    try:
        return subprocess.run([psql, "-X", "-At", "-F", "\t", "-d", dsn, "-c", sql], capture_output=True,
                              text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None


class CpuSampler:
    """CPU seconds per process over a run, by sampling /proc every 0.2 s (a process that
    exits loses at most its last 0.2 s). Groups: the slotguard server, the load
    generator (CMD and its children), PostgreSQL (processes of the postgres user), and
    everything else by command name (other engineers' compilers, for instance)."""

    def __init__(self, server=None):
        self.server = server
        self.threads_first, self.threads_last = {}, {}
        try:
            import pwd
            self.pg_uid = pwd.getpwnam("postgres").pw_uid
        except (KeyError, ImportError):
            self.pg_uid = None
        self.first, self.last, self.info = {}, {}, {}
        self.stop = threading.Event()
        self.scan(first=True)
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def scan(self, first=False):
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    text = f.read()
                uid = os.stat(f"/proc/{pid}").st_uid
            except OSError:
                continue
            comm = text[text.index("(") + 1:text.rindex(")")]
            rest = text.rsplit(")", 1)[1].split()
            cpu = (int(rest[11]) + int(rest[12])) / TICK
            if first:
                self.first[pid] = cpu
            self.last[pid] = cpu
            self.info[pid] = (comm, int(rest[1]), uid)
        if self.server:
            self.scan_threads(first)

    def scan_threads(self, first):
        """The server's threads: which of them is busy (a single writer shows here)."""
        base = f"/proc/{self.server}/task"
        try:
            tids = os.listdir(base)
        except OSError:
            return
        for tid in tids:
            try:
                with open(f"{base}/{tid}/stat") as f:
                    text = f.read()
            except OSError:
                continue
            comm = text[text.index("(") + 1:text.rindex(")")]
            rest = text.rsplit(")", 1)[1].split()
            cpu = (int(rest[11]) + int(rest[12])) / TICK
            if first:
                self.threads_first[tid] = cpu
            self.threads_last[tid] = (comm, cpu)

    def loop(self):
        while not self.stop.wait(0.2):
            self.scan()

    def finish(self, server, child):
        self.stop.set()
        self.thread.join()
        self.scan()
        me = str(os.getpid())
        groups = {}
        for pid, cpu in self.last.items():
            used = cpu - self.first.get(pid, 0.0)
            if used <= 0 or pid == me:
                continue
            comm, ppid, uid = self.info[pid]
            if pid == str(server):
                group = "slotguard server"
            elif pid == str(child) or ppid == child:
                group = "load generator"
            elif uid == self.pg_uid:
                group = "postgres"
            else:
                group = "other: " + comm
            groups[group] = groups.get(group, 0.0) + used
        return dict(sorted(groups.items(), key=lambda kv: -kv[1]))

    def server_threads(self):
        """CPU seconds of each server thread over the run, busiest first."""
        used = [(f"{comm} [{tid}]", cpu - self.threads_first.get(tid, 0.0))
                for tid, (comm, cpu) in self.threads_last.items()]
        return dict(sorted(((k, v) for k, v in used if v > 0), key=lambda kv: -kv[1]))


def cmd_run(argv):
    opts, cmd = parse_opts(argv)
    server = opts.get("server-pid")
    psql, dsn = opts.get("psql"), opts.get("dsn")
    top_file, top_after = opts.get("top-file"), float(opts.get("top-after", 0))

    statements = opts.get("statements-out")
    if statements:
        psql_run(psql, dsn, "SELECT pg_stat_statements_reset()")
    cpu0, server0 = machine_cpu(), process_cpu(server) if server else None
    pg0 = pg_stats(psql, dsn) if dsn else None
    sampler = CpuSampler(server)
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd)
    if top_file and top_after > 0:
        def snapshot():
            time.sleep(top_after)
            if child.poll() is None:
                with open(top_file, "w") as f:
                    subprocess.run(["top", "-b", "-n", "1", "-w", "200"], stdout=f,
                                   stderr=subprocess.DEVNULL)
        threading.Thread(target=snapshot, daemon=True).start()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    cpu1, server1 = machine_cpu(), process_cpu(server) if server else None
    by_process = sampler.finish(server, child.pid)
    pg1 = pg_stats(psql, dsn) if dsn else None

    if statements:
        with open(statements, "w") as f:
            f.write(psql_run(psql, dsn, STATEMENTS) or "")
    total = (cpu1["total"] - cpu0["total"]) or 1
    cores = os.cpu_count() or 1
    result = {
        "command": cmd,
        "exitCode": code,
        "wallSeconds": wall,
        "loadGeneratorCpuSeconds": usage.ru_utime + usage.ru_stime,
        "machineBusyPct": 100.0 * (total - (cpu1["idle"] - cpu0["idle"])
                                   - (cpu1["iowait"] - cpu0["iowait"])) / total,
        "machineIowaitPct": 100.0 * (cpu1["iowait"] - cpu0["iowait"]) / total,
        "cores": cores,
        "cpuSecondsByProcess": by_process,
    }
    if server:
        result["serverCpuSeconds"] = (
            server1 - server0 if server0 is not None and server1 is not None else None
        )
        result["server"] = process_memory(server)
        result["serverThreadCpuSeconds"] = sampler.server_threads()
    if pg0 and pg1:
        result["postgres"] = {k: pg1[k] - pg0[k] for k in pg0}
    with open(opts["out"], "w") as f:
        json.dump(result, f, indent=2)
    sys.exit(code)


def parse_opts(argv):
    opts, rest = {}, []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest = argv[i + 1:]
            break
        if a.startswith("--"):
            opts[a[2:]] = argv[i + 1]
            i += 2
        else:
            rest.append(a)
            i += 1
    return opts, rest


def instant(text):
    # RFC 3339 with nanoseconds and Z; fromisoformat takes at most microseconds.
    text = text.replace("Z", "+00:00")
    m = re.match(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)", text)
    frac = (m.group(2) or ".0")[:7]
    return datetime.fromisoformat(m.group(1) + frac + m.group(3)).timestamp()


def cmd_hot_rate(argv):
    opts, files = parse_opts(argv)
    rounds = []
    for path in files:
        ops = [json.loads(line) for line in open(path) if line.strip()]
        ok = [op for op in ops if op.get("outcome") == "ok"]
        if not ops or not ok:
            rounds.append({"history": path, "bookings": 0, "seconds": 0.0})
            continue
        start = min(instant(op["invokedAt"]) for op in ops)
        end = max(instant(op["completedAt"]) for op in ok)
        days = {(op["response"]["date"] if op.get("response") else None) for op in ok}
        rounds.append({"history": path, "bookings": len(ok), "seconds": end - start,
                       "requests": len(ops), "days": len(days)})
    booked = sum(r["bookings"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    result = {"rounds": rounds, "bookings": booked, "seconds": seconds,
              "bookingsPerSecond": booked / seconds if seconds else 0.0}
    with open(opts["out"], "w") as f:
        json.dump(result, f, indent=2)
    print(f"{booked} bookings in {seconds:.2f} s = {result['bookingsPerSecond']:.1f}/s")


# ---- the tables ----

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def pgbench_tps(path):
    try:
        text = open(path).read()
    except OSError:
        return None
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", text)
    failed = re.search(r"number of failed transactions: (\d+)", text)
    done = re.search(r"number of transactions actually processed: (\d+)", text)
    aborted = "aborted" in text
    if not m:
        return None
    return {"tps": float(m.group(1)), "failed": int(failed.group(1)) if failed else 0,
            "transactions": int(done.group(1)) if done else None, "aborted": aborted}


def loadtest_rate(report):
    if not report:
        return None
    s = report["summary"]
    secs = report["model"]["closed"]["durationSeconds"]
    return {"rate": s["successes"] / secs, "requests": s["requests"], "successes": s["successes"],
            "seconds": secs, "byClass": s.get("byClass", {}), "p50": s["latencyMs"]["p50"],
            "p99": s["latencyMs"]["p99"]}


def verdict(ratio, target):
    if ratio is None:
        return "not measured"
    if ratio >= target:
        return f"met (target ≥ {target:.1f}×)"
    return f"**missed** by {100 * (target - ratio) / target:.0f} % (target ≥ {target:.1f}×, short {target - ratio:.2f}×)"


def fmt(x, digits=1):
    return "–" if x is None else f"{x:,.{digits}f}"


def merge(probes):
    """Several probed runs (the hot day's rounds) as one: times and counters add up."""
    probes = [p for p in probes if p]
    if not probes:
        return None
    if len(probes) == 1:
        return probes[0]
    wall = sum(p["wallSeconds"] for p in probes)
    out = dict(probes[0], wallSeconds=wall)
    for k in ("loadGeneratorCpuSeconds", "serverCpuSeconds"):
        out[k] = sum(p.get(k) or 0 for p in probes)
    by = {}
    for p in probes:
        for k, v in p.get("cpuSecondsByProcess", {}).items():
            by[k] = by.get(k, 0.0) + v
    out["cpuSecondsByProcess"] = by
    threads = {}
    for p in probes:
        for k, v in p.get("serverThreadCpuSeconds", {}).items():
            threads[k] = threads.get(k, 0.0) + v
    out["serverThreadCpuSeconds"] = dict(sorted(threads.items(), key=lambda kv: -kv[1]))
    for k in ("machineBusyPct", "machineIowaitPct"):
        out[k] = sum(p[k] * p["wallSeconds"] for p in probes) / wall
    if all(p.get("postgres") for p in probes):
        out["postgres"] = {k: sum(p["postgres"][k] for p in probes) for k in probes[0]["postgres"]}
    return out


def other_pct(probe):
    """Share of both cores that processes outside the benchmark used during a run."""
    if not probe or "cpuSecondsByProcess" not in probe:
        return None
    by = probe["cpuSecondsByProcess"]
    other = sum(v for k, v in by.items() if k.startswith("other: "))
    return 100 * other / (probe["wallSeconds"] or 1) / probe.get("cores", 2)


def noise(*probes):
    values = [other_pct(p) for p in probes]
    return " / ".join("–" if v is None else f"{v:.0f} %" for v in values)


def cpu_note(probe, server=True, bookings=None):
    if not probe:
        return "–"
    wall = probe["wallSeconds"] or 1
    cores = probe.get("cores", 2)
    parts = [f"busy {probe['machineBusyPct']:.0f} %, iowait {probe['machineIowaitPct']:.0f} %"]
    by = probe.get("cpuSecondsByProcess", {})
    named = [("slotguard server", "slotguard"), ("postgres", "postgres"), ("load generator", "load generator")]
    for key, label in named:
        if key in by:
            parts.append(f"{label} {by[key] / wall / cores * 100:.0f} %")
    threads = probe.get("serverThreadCpuSeconds")
    if server and threads:
        name, busiest = next(iter(threads.items()))
        parts.append(f"busiest slotguard thread {name.split(' [')[0]} {100 * busiest / wall:.0f} % of one core")
    others = sorted(((k[7:], v) for k, v in by.items() if k.startswith("other: ")), key=lambda kv: -kv[1])
    other_total = sum(v for _, v in others)
    if other_total / wall / cores >= 0.005:
        top = ", ".join(f"{k} {v / wall / cores * 100:.0f} %" for k, v in others[:3])
        parts.append(f"**other {other_total / wall / cores * 100:.0f} %** ({top})")
    if bookings:
        per = [f"{label} {1000 * by[key] / bookings:.2f}" for key, label in named
               if 1000 * by.get(key, 0.0) / bookings >= 0.005]
        parts.append("CPU ms per booking: " + ", ".join(per))
    pg = probe.get("postgres")
    if pg and pg.get("walSyncs") and bookings:
        parts.append(f"{bookings / pg['walSyncs']:.2f} bookings per WAL fsync")
    return "; ".join(parts)


def cmd_table(argv):
    d = argv[0]
    out = []
    diag = []
    meta = load(os.path.join(d, "machine.json")) or {}
    if meta:
        out.append(f"Machine: {meta.get('nproc')} × {meta.get('cpu')}, load before the run "
                   f"{meta.get('loadBefore')}, mode `{meta.get('mode')}`, {meta.get('started')}; "
                   f"tree `{meta.get('git')}`, binary built {meta.get('binaryBuilt')}.\n")

    def trials(pattern):
        """Trial numbers k for which files named pattern.format(k=k) exist."""
        found = glob.glob(os.path.join(d, pattern.format(k="*")))
        ks = set()
        for f in found:
            m = re.search(r"-t(\d+)[.-]", os.path.basename(f))
            if m:
                ks.add(int(m.group(1)))
        return sorted(ks)

    def pg_trial(mode, n, k):
        """(raw tps, slotguard bookings/s, raw note, slotguard note, raw probe, slotguard probe, bookings)"""
        raw = pgbench_tps(os.path.join(d, f"pg-{mode}-{n}-raw-t{k}.txt"))
        if mode == "spread":
            sg = loadtest_rate(load(os.path.join(d, f"pg-spread-{n}-sg-t{k}.report.json")))
            sg_rate = sg and sg["rate"]
            sg_note = sg and (f"{sg['successes']} × 201 of {sg['requests']} requests"
                              f" ({sg['byClass'].get('409 slot_taken', 0)} × 409 slot_taken)")
            probe = load(os.path.join(d, f"pg-spread-{n}-sg-t{k}.probe.json"))
            booked = sg and sg["successes"]
        else:
            hot = load(os.path.join(d, f"pg-hot-{n}-sg-t{k}.rate.json"))
            sg_rate = hot and hot["bookingsPerSecond"]
            sg_note = hot and (f"{hot['bookings']} × 201 in {hot['seconds']:.2f} s over "
                               f"{len(hot['rounds'])} doctor-days")
            probe = merge([load(p) for p in sorted(glob.glob(os.path.join(d, f"pg-hot-{n}-sg-t{k}-r*.probe.json")))])
            booked = hot and hot["bookings"]
        raw_note = raw and (f"{raw['transactions']} committed" +
                            (f", {raw['failed']} failed" if raw["failed"] else "") +
                            (", CLIENT ABORTED" if raw["aborted"] else ""))
        return (raw and raw["tps"], sg_rate, raw_note, sg_note,
                load(os.path.join(d, f"pg-{mode}-{n}-raw-t{k}.probe.json")), probe,
                raw and raw["transactions"], booked)

    def mean(xs):
        xs = [x for x in xs if x is not None]
        return sum(xs) / len(xs) if xs else None

    rows = []
    for mode, target in (("spread", 0.5), ("hot", 0.8)):
        for n in (8, 32, 64):
            ks = trials(f"pg-{mode}-{n}-raw-t{{k}}.txt")
            if not ks:
                continue
            results = [pg_trial(mode, n, k) for k in ks]
            raw_mean = mean([r[0] for r in results])
            sg_mean = mean([r[1] for r in results])
            ratio = sg_mean / raw_mean if sg_mean is not None and raw_mean else None
            per_trial = ", ".join(fmt(r[1] / r[0], 2) if r[0] and r[1] is not None else "–" for r in results)
            rows.append((f"PostgreSQL {mode}", n, raw_mean, sg_mean, ratio, per_trial, verdict(ratio, target),
                         ", ".join(noise(r[4], r[5]) for r in results)))
            for k, r in zip(ks, results):
                diag.append((f"PostgreSQL {mode}, {n} clients, pgbench, trial {k}", r[2],
                             cpu_note(r[4], server=False, bookings=r[6])))
                diag.append((f"PostgreSQL {mode}, {n} clients, slotguard, trial {k}", r[3],
                             cpu_note(r[5], bookings=r[7])))

    ks = trials("sqlite-raw-t{k}.json")
    raws = {k: load(os.path.join(d, f"sqlite-raw-t{k}.json")) for k in ks}
    for n in (8, 32, 64):
        pairs = []
        for k in ks:
            raw = raws[k]
            sg = loadtest_rate(load(os.path.join(d, f"sqlite-spread-{n}-sg-t{k}.report.json")))
            pairs.append((raw and raw["bookingsPerSecond"], sg and sg["rate"],
                          load(os.path.join(d, f"sqlite-raw-t{k}.probe.json")),
                          load(os.path.join(d, f"sqlite-spread-{n}-sg-t{k}.probe.json")), sg, k))
        if not pairs:
            continue
        raw_mean, sg_mean = mean([p[0] for p in pairs]), mean([p[1] for p in pairs])
        ratio = sg_mean / raw_mean if sg_mean is not None and raw_mean else None
        per_trial = ", ".join(fmt(p[1] / p[0], 2) if p[0] and p[1] is not None else "–" for p in pairs)
        rows.append(("SQLite spread (raw: 1 connection)", n, raw_mean, sg_mean, ratio, per_trial,
                     verdict(ratio, 1.0), ", ".join(noise(p[2], p[3]) for p in pairs)))
        for p in pairs:
            sg = p[4]
            diag.append((f"SQLite spread, {n} clients, slotguard, trial {p[5]}",
                         sg and f"{sg['successes']} × 201 of {sg['requests']} requests",
                         cpu_note(p[3], bookings=sg and sg["successes"])))
    for k in ks:
        raw = raws[k]
        if raw:
            diag.append((f"SQLite raw (1 connection, synchronous=FULL), trial {k}",
                         f"{raw['bookings']} committed, {raw['refused']} refused, in {raw['seconds']:.1f} s",
                         cpu_note(load(os.path.join(d, f"sqlite-raw-t{k}.probe.json")), server=False,
                                  bookings=raw["bookings"])))

    if rows:
        out.append("Raw and slotguard bookings/s are means over the trials (each trial: raw, then "
                   "slotguard, back to back); the ratio is of the means.\n")
        out.append("| workload | clients | raw bookings/s | slotguard bookings/s | slotguard ÷ raw | ratio per trial "
                   "| target | CPU of other processes per trial (raw / slotguard) |")
        out.append("|---|---:|---:|---:|---:|---:|---|---:|")
        for name, n, r, sv, ratio, per, v, nz in rows:
            out.append(f"| {name} | {n} | {fmt(r)} | {fmt(sv)} | {fmt(ratio, 2)} | {per} | {v} | {nz} |")
        out.append("")

    plan_rows = []
    for store in ("sqlite", "postgres"):
        rep = load(os.path.join(d, f"plan-{store}.report.json"))
        probe = load(os.path.join(d, f"plan-{store}.probe.json"))
        if not rep:
            continue
        s = rep["summary"]
        lat = s["latencyMs"]
        hwm = probe and probe.get("server", {}).get("VmHWMkB")
        p99_ok = "met" if lat["p99"] < 10 else f"**missed** by {lat['p99'] - 10:.2f} ms"
        rss_ok = "–" if hwm is None else ("met" if hwm < 64 * 1024 else f"**missed** by {(hwm - 64 * 1024) / 1024:.1f} MB")
        by = ", ".join(f"{k}: {v}" for k, v in s.get("byClass", {}).items())
        plan_rows.append(f"| {store} | {s['requests']} ({by}) | {lat['p50']:.2f} | {lat['p99']:.2f} | {lat['max']:.2f} | {p99_ok} | "
                         f"{fmt(hwm and hwm / 1024)} MB | {rss_ok} |")
    if plan_rows:
        phase = (rep or {}).get("model", {}).get("open", {}).get("phases", [{}])[0]
        out.append(f"The clinic's plan: {phase.get('arrivalRate', '?'):g} arrivals/s for "
                   f"{phase.get('duration', '?'):g} s, all for slot 5 of one doctor-day "
                   "(open model; latency from each arrival's due time).\n")
        out.append("| store | requests (outcomes) | p50 ms | p99 ms | max ms | p99 < 10 ms | server peak RSS (VmHWM) | RSS < 64 MB |")
        out.append("|---|---|---:|---:|---:|---|---:|---|")
        out.extend(plan_rows)
        out.append("")

    if diag:
        out.append("| run | counts | where the CPU went (share of both cores over the run, incl. set-up and read-back) |")
        out.append("|---|---|---|")
        for name, counts, cpu in diag:
            out.append(f"| {name} | {counts or '–'} | {cpu} |")
        out.append("")
    diag_rows = []
    for name, stem, kind in (
        ("PostgreSQL spread, 32 clients, pgbench", "diag-pg-spread-raw", "pgbench"),
        ("PostgreSQL spread, 32 clients, pgbench + pg_notify", "diag-pg-spread-raw-notify", "pgbench"),
        ("PostgreSQL spread, 32 clients, slotguard", "diag-pg-spread-sg", "loadtest"),
        ("PostgreSQL hot, 32 clients, pgbench", "diag-pg-hot-raw", "pgbench"),
        ("PostgreSQL hot, 32 clients, pgbench + pg_notify", "diag-pg-hot-raw-notify", "pgbench"),
        ("PostgreSQL hot, 32 clients, slotguard", "diag-pg-hot-sg", "loadtest"),
        ("SQLite, raw loop (1 connection)", "diag-sqlite-raw", "sqlite"),
        ("SQLite spread, 32 clients, slotguard", "diag-sqlite-sg", "loadtest"),
    ):
        counts = perf_counts(os.path.join(d, stem + ".perf"))
        if stem == "diag-pg-hot-sg":
            stem += "-r1"
        statements = statement_calls(os.path.join(d, stem + ".statements.txt"))
        if counts is None:
            continue
        if kind == "pgbench":
            r = pgbench_tps(os.path.join(d, stem + ".txt"))
            booked, rate = r and r["transactions"], r and r["tps"]
        elif kind == "sqlite":
            r = load(os.path.join(d, stem + ".json"))
            booked, rate = r and r["bookings"], r and r["bookingsPerSecond"]
        else:
            r = load(os.path.join(d, stem + ".report.json"))
            booked = r and r["summary"]["successes"]
            rate = r and booked / r["model"]["closed"]["durationSeconds"]
        if not booked:
            continue
        syncs = counts.get("syscalls:sys_enter_fsync", 0) + counts.get("syscalls:sys_enter_fdatasync", 0)
        diag_rows.append(f"| {name} | {booked} | {fmt(rate)} | {syncs / booked:.3f} | "
                         f"{booked / syncs if syncs else float('inf'):.2f} | "
                         f"{counts.get('syscalls:sys_enter_sendto', 0) / booked:.1f} | "
                         f"{counts.get('syscalls:sys_enter_writev', 0) / booked:.1f} | "
                         + ("–" if statements is None else f"{statements / booked:.1f}") + " |")
    if diag_rows:
        out.append("Diagnostic runs (short, 32 clients, counted with `perf stat -a`, so every process "
                   "on the machine: server, database, load generator):\n")
        out.append("| run | bookings | bookings/s (perturbed) | fsync+fdatasync per booking | bookings per fsync "
                   "| sendto per booking | writev per booking | SQL statements per booking (no BEGIN/COMMIT) |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        out.extend(diag_rows)
        out.append("")
    fs = load(os.path.join(d, "fsync.json"))
    if fs:
        out.append(f"Disk: one 4 KiB write + fdatasync takes {fs['medianMs']:.2f} ms median, "
                   f"{fs['p99Ms']:.2f} ms p99 ({fs['perSecond']:.0f}/s serially) in the benchmark's temp dir.\n")
    print("\n".join(out))


def statement_calls(path):
    """Statements clients sent PostgreSQL (pg_stat_statements calls), without BEGIN,
    COMMIT and ROLLBACK (pgbench's prepared ones are not tracked) and without the
    probe's own queries."""
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return None
    rows = [l.split("\t") for l in lines if l.strip()]
    return sum(int(r[0]) for r in rows if len(r) >= 4
               and r[3].split(" ")[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK")
               and "pg_stat_statements" not in r[3] and "pg_stat_wal" not in r[3])


def perf_counts(path):
    """`perf stat -x,` output: value,unit,event,..."""
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return None
    counts = {}
    for line in lines:
        parts = line.split(",")
        if len(parts) >= 3 and parts[0].strip().isdigit():
            counts[parts[2]] = int(parts[0])
    return counts


def cmd_fsync(argv):
    opts, _ = parse_opts(argv)
    path = os.path.join(opts["dir"], "fsync-probe")
    n = int(opts.get("n", 300))
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"x" * 4096
        for i in range(n):
            t = time.perf_counter()
            os.pwrite(fd, block, (i % 64) * 4096)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    result = {"n": n, "medianMs": 1000 * times[n // 2], "p99Ms": 1000 * times[int(n * 0.99)],
              "perSecond": n / sum(times)}
    with open(opts["out"], "w") as f:
        json.dump(result, f, indent=2)


def cmd_noise(argv):
    """Prints the most CPU (in % of all cores) that other processes took in any of the
    probed runs given, as an integer."""
    worst = 0.0
    for path in argv:
        worst = max(worst, other_pct(load(path)) or 0.0)
    print(int(round(worst)))


def cmd_quiet(argv):
    """Waits until the machine is quiet: under 10 % of all cores busy over 5 s."""
    opts, _ = parse_opts(argv)
    deadline = time.time() + float(opts.get("max-wait", 600))
    while True:
        a = machine_cpu()
        time.sleep(5)
        b = machine_cpu()
        busy = 100 * (1 - (b["idle"] - a["idle"] + b["iowait"] - a["iowait"]) / ((b["total"] - a["total"]) or 1))
        if busy < 10:
            print(f"quiet: {busy:.0f} % busy over 5 s", file=sys.stderr)
            return
        if time.time() > deadline:
            print(f"still {busy:.0f} % busy; starting anyway", file=sys.stderr)
            return
        print(f"waiting for a quiet machine: {busy:.0f} % busy", file=sys.stderr)


if __name__ == "__main__":
    commands = {"run": cmd_run, "hot-rate": cmd_hot_rate, "table": cmd_table, "fsync": cmd_fsync,
                "quiet": cmd_quiet, "noise": cmd_noise}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    commands[sys.argv[1]](sys.argv[2:])
