#!/usr/bin/env python3
"""The dashboard benchmark's helpers (Python 3.11, stdlib only); bench/dashboard.sh
drives them. See BENCHMARKS.md, "Dashboard (issue 10)".

    dashboard.py load --store sqlite --db FILE [SIZES] --out F.json
    dashboard.py load --store postgres --psql PSQL --dsn URL [SIZES] --out F.json
        Fills a freshly migrated database directly with SQL (sqlite3 executemany in big
        transactions; psql COPY FROM STDIN): clinics, doctors, appointments spread over
        the last --days-back days and the next --days-ahead, incidents with their
        watched (Kloqo) member documents, the booking rollups those bookings would have
        left, booking totals, and a succeeded nightly audit run per clinic and due day.
        SIZES: --clinics 50 --appointments 1000000 --incidents 10000 --seed 1.
        Every timestamp is at least 20 minutes old, so the detector's re-scan (2 min)
        and the live pages' follower (10 s) never pick the loaded rows up.
    dashboard.py login --url URL --email E --password P --out COOKIE_FILE
        POSTs the login form; writes the sg_session cookie's value.
    dashboard.py settle --pid P [--max-wait S]
        Waits until process P used under 3 % of a core over 2 s (the server's start-up
        work: the auditor's first pass, the weekly reports it builds).
    dashboard.py pages --url URL --cookie-file F --bodies DIR [--n 200 --warmup 20 --max-seconds S
                       --cold N --tag T] --out F.json
        GETs each page in turn, one request at a time on one keep-alive connection,
        round-robin so that every page sees the same machine; latency is from sending
        the request to the last byte of the body (client side, loopback). Each request
        carries X-Request-Id bd-T-PAGE-ROUND, so `summary` finds the server's own time
        in its log. The very first GET of / is recorded on its own (nothing kept yet).
        --cold N: then N requests of / each 65 s after the last (the overview's live
        part is kept rendered 5 s, so each is rendered anew).
    dashboard.py sse --url URL --cookie-file F --key-file F --streams 200 --trials 3
                     --server-pid P --clinic C --doctor D --doctor-name N --date D
                     [--first-slot 500] [--reload] --out F.json
        Opens the streams (GET /events), waits until every one has its headers, then per
        trial PUTs two Kloqo documents into one free slot (a new incident) and times,
        per stream, the first `event: incident` after the second PUT's answer. Samples
        the server's VmRSS/VmHWM while the streams are open and after they close.
        --reload adds one trial in which every stream, on its event, reloads the
        overview's live region (GET /fragments/overview) as the page's htmx would.
    dashboard.py explain --store sqlite --db FILE | --store postgres --psql PSQL --dsn URL
                         --load LOAD.json --out F.txt
        EXPLAIN (QUERY PLAN on SQLite, with each statement timed; ANALYZE, BUFFERS on
        PostgreSQL, after 6 EXECUTEs of the prepared statement, as sqlx runs them) of
        the statements the overview and incidents pages run (`page_queries`).
    dashboard.py statements --url URL --cookie-file F --psql PSQL --dsn URL --out F.txt
        PostgreSQL with pg_stat_statements loaded: the statements one GET / and one
        GET /incidents run, with calls and time inside PostgreSQL.
    dashboard.py summary --store S --dir DIR
        Merges DIR/dashboard-S-*.json (and the server's logged times) into
        DIR/dashboard-S.json.
    dashboard.py table FILE...
        The markdown tables of the summaries given.
"""

import asyncio
import http.client
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import probe  # noqa: E402  (bench/probe.py: /proc helpers, other processes' CPU)

PAGE_P99_MS = 50.0
PAGE_BYTES = 100_000  # "100 KB", taken as 100,000 bytes (the stricter reading)
SSE_WITHIN_MS = 1000.0
RSS_LIMIT_KB = 100 * 1024  # "100 MB", taken as 100 MiB of VmRSS

# ---- the data set ------------------------------------------------------------------

CITIES = ["Kochi", "Aluva", "Thrissur", "Kozhikode", "Kannur", "Kollam", "Alappuzha", "Kottayam",
          "Palakkad", "Malappuram", "Trivandrum", "Pathanamthitta", "Idukki", "Wayanad", "Kasaragod",
          "Mangaluru", "Mysuru", "Bengaluru", "Chennai", "Coimbatore", "Madurai", "Hyderabad",
          "Pune", "Mumbai", "Goa"]
# Most clinics in India; two elsewhere, so "today" differs between clinics on the page.
ZONES = {"Asia/Kolkata": timedelta(hours=5, minutes=30), "Asia/Dubai": timedelta(hours=4),
         "Asia/Singapore": timedelta(hours=8)}
DOCTORS_PER_CLINIC = 4
SLOT_MINUTES = 5
SESSIONS = [(9 * 60, 48), (17 * 60, 48)]  # (local start in minutes, slots): 09–13 and 17–21
AVAILABILITY = json.dumps({d: [{"from": "09:00", "to": "13:00"}, {"from": "17:00", "to": "21:00"}]
                           for d in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]})
FIRST_NAMES = ["Asha", "Ravi", "Meera", "Anil", "Divya", "Suresh", "Lakshmi", "Arjun", "Fatima", "Joseph",
               "Priya", "Rahul", "Sneha", "Vinod", "Anjali", "Kiran", "Nisha", "Manoj", "Deepa", "Ajay"]
# Every generated instant is at least this old when loading starts.
MIN_AGE = timedelta(minutes=20)


def ts(dt):
    """An instant as slotguard's SQLite store writes it (sqlx: RFC 3339, +00:00);
    PostgreSQL reads the same text into TIMESTAMPTZ."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000+00:00"


def uuid4(rng):
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


class DataSet:
    """Rows for every table, generated in column order, deterministic for a seed and a
    'now'. Generators run in order: appointments feed the rollups and audit counts."""

    def __init__(self, now, clinics=50, appointments=1_000_000, incidents=10_000, days_back=120,
                 days_ahead=5, seed=1):
        self.now = now
        self.rng = random.Random(seed)
        self.n_appointments, self.n_incidents = appointments, incidents
        self.days_back, self.days_ahead = days_back, days_ahead
        self.clinics = []
        for i in range(clinics):
            zone = "Asia/Kolkata"
            if clinics >= 10 and i == clinics - 2:
                zone = "Asia/Dubai"
            elif clinics >= 10 and i == clinics - 1:
                zone = "Asia/Singapore"
            offset = ZONES[zone]
            today = (now + offset).date()
            self.clinics.append({
                "id": f"clinic-{i + 1:02d}", "name": f"{CITIES[i % len(CITIES)]} {i // len(CITIES) + 1}",
                "zone": zone, "offset": offset, "today": today,
                "doctors": [(f"dr-{d + 1}", f"Dr. {FIRST_NAMES[(i * 4 + d) % len(FIRST_NAMES)]} {chr(65 + d)}")
                            for d in range(DOCTORS_PER_CLINIC)],
            })
        self.created = now - timedelta(days=days_back + 10)
        self.latest = now - MIN_AGE
        self.rollups = {}  # (clinic, day, hour, doctor, kind, outcome) -> [count, retries, latency_us]
        self.day_counts = {}  # (clinic, date) -> appointments (native and watched)
        self.incident_rows = []
        self.counts = {}

    # -- helpers
    def local(self, clinic, day, minutes):
        """A local wall-clock time of a clinic's day as a UTC instant."""
        return datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(minutes=minutes) - clinic["offset"]

    def clamp(self, dt):
        if dt > self.latest:
            return self.latest - timedelta(seconds=self.rng.uniform(0, 6 * 3600))
        return dt

    def doctor_days(self):
        for c in self.clinics:
            first = c["today"] - timedelta(days=self.days_back)
            for offset in range(self.days_back + self.days_ahead + 1):
                day = first + timedelta(days=offset)
                for doctor_id, name in c["doctors"]:
                    yield c, doctor_id, name, day

    # -- tables
    def clinic_rows(self):
        for c in self.clinics:
            yield (c["id"], c["name"], c["zone"], 2000, 30, ts(self.created), ts(self.created), "23:00")

    def doctor_rows(self):
        for c in self.clinics:
            for doctor_id, name in c["doctors"]:
                yield (c["id"], doctor_id, name, SLOT_MINUTES, AVAILABILITY, "{}", ts(self.created), ts(self.created))

    def appointment_rows(self):
        rng = self.rng
        days = list(self.doctor_days())
        base, extra = divmod(self.n_appointments, len(days))
        plus_one = set(rng.sample(range(len(days)), extra))
        slots = [(s, k) for s, (_, n) in enumerate(SESSIONS) for k in range(n)]
        made = 0
        for i, (c, doctor_id, _, day) in enumerate(days):
            n = min(base + (i in plus_one), len(slots))
            past = day < c["today"]
            day_text = day.isoformat()
            self.day_counts[(c["id"], day_text)] = self.day_counts.get((c["id"], day_text), 0) + n
            for s, k in sorted(rng.sample(slots, n)):
                start, _ = SESSIONS[s]
                minute = start + k * SLOT_MINUTES
                slot_at = self.local(c, day, minute)
                walk_in = past and rng.random() < 0.15
                if walk_in:
                    kind, token, via = "walk_in", f"W{s + 1}-{k + 1:03d}", "Walk-in"
                    created = slot_at - timedelta(minutes=rng.uniform(5, 60))
                else:
                    kind, token = "advance", f"A{s + 1}-{k + 1:03d}"
                    via = "Online" if rng.random() < 0.7 else "Reception"
                    lead = min(int(rng.expovariate(0.5)), 14)
                    created = self.local(c, day - timedelta(days=lead), rng.uniform(7 * 60, 22 * 60))
                    if created > slot_at:
                        created = slot_at - timedelta(minutes=rng.uniform(30, 600))
                created = self.clamp(created)
                r = rng.random()
                if r < 0.08:
                    status = "Cancelled"
                    updated = self.clamp(created + timedelta(hours=rng.uniform(0.1, 48)))
                elif past:
                    status = "No-show" if r < 0.11 else "Completed"
                    updated = self.clamp(slot_at + timedelta(minutes=rng.uniform(5, 40)))
                else:
                    status = "Confirmed" if r < 0.18 else "Pending"
                    updated = created
                made += 1
                yield (uuid4(rng), c["id"], doctor_id, day_text, s, s * 1000 + k,
                       f"{minute // 60:02d}:{minute % 60:02d}", kind, k + 1, token, status,
                       f"{rng.choice(FIRST_NAMES)} {made}", f"+9198{rng.randrange(10 ** 8):08d}", via,
                       ts(created), ts(updated), None)
                # The attempt that made it, in the clinic's local day and hour.
                local = created + c["offset"]
                key = (c["id"], local.date().isoformat(), local.hour, doctor_id, kind, "booked")
                tally = self.rollups.setdefault(key, [0, 0, 0])
                tally[0] += 1
                tally[1] += rng.random() < 0.02
                tally[2] += rng.randrange(800, 4000)
        self.counts["appointments"] = made

    def rollup_rows(self):
        rng = self.rng
        refusals = {}
        for (clinic, day, hour, doctor, kind, _), (count, _, _) in self.rollups.items():
            # Patients who lost a race for a slot, and walk-ins turned away.
            if kind == "advance" and rng.random() < 0.15:
                refusals[(clinic, day, hour, doctor, kind, "slot_taken")] = [rng.randint(1, 2), 0, rng.randrange(500, 2000)]
            if kind == "walk_in" and rng.random() < 0.05:
                refusals[(clinic, day, hour, doctor, kind, "no_walk_in_slot")] = [1, 0, rng.randrange(500, 2000)]
        self.rollups.update(refusals)
        for key in sorted(self.rollups):
            count, retries, latency = self.rollups[key]
            yield key + (count, retries, latency)
        self.counts["booking_rollups"] = len(self.rollups)

    def total_rows(self):
        totals = {}
        for (_, _, _, _, kind, outcome), (count, retries, _) in self.rollups.items():
            t = totals.setdefault((kind, outcome), [0, 0])
            t[0] += count
            t[1] += retries
        for (kind, outcome), (count, retries) in sorted(totals.items()):
            yield (kind, outcome, count, retries)

    def incidents_and_members(self):
        """Incidents of duplicates between Kloqo documents (watched), in slots 100–399
        and tokens K-…; native appointments hold slots 0–47 and 1000–1047, and the SSE
        measurement uses slot 500 and up: no generated row ever collides with another."""
        rng = self.rng
        days = list(self.doctor_days())
        per_day = {}
        incidents, members = [], []
        for n in range(self.n_incidents):
            c, doctor_id, doctor_name, day = rng.choice(days)
            key_day = (c["id"], doctor_id, day)
            i = per_day.get(key_day, 0)
            per_day[key_day] = i + 1
            kind = "slot" if rng.random() < 0.7 else "token"
            size = 3 if rng.random() < 0.05 else 2
            key = str(100 + i) if kind == "slot" else f"K-{i:03d}"
            today = c["today"]
            age = (today - day).days
            # When the second member was written, and when the detector or audit saw it.
            written = self.local(c, day - timedelta(days=min(int(rng.expovariate(0.5)), 10)),
                                 rng.uniform(7 * 60, 21 * 60))
            audit_found = age >= 1 and rng.random() < 0.1
            if audit_found:
                first_seen = self.local(c, day, 23 * 60) + timedelta(seconds=rng.uniform(2, 30))
                detection_ms = None
            else:
                detection_ms = rng.randint(12, 60)
                first_seen = written + timedelta(milliseconds=detection_ms)
            first_seen = self.clamp(first_seen)
            written = min(written, first_seen)
            if age > 14:
                state = rng.choices(["resolved", "acknowledged", "open"], [92, 3, 5])[0]
            else:
                state = rng.choices(["resolved", "acknowledged", "open"], [35, 25, 40])[0]
            ack_at = ack_by = res_at = res_by = note = None
            last_seen = first_seen
            if state in ("acknowledged", "resolved") and (state == "acknowledged" or rng.random() < 0.7):
                ack_at = self.clamp(first_seen + timedelta(minutes=rng.uniform(2, 240)))
                ack_by = "user:frontdesk@example.org"
            if state == "resolved":
                res_at = self.clamp(max(first_seen, ack_at or first_seen) + timedelta(minutes=rng.uniform(5, 600)))
                if rng.random() < 0.5:
                    res_by, note = "user:frontdesk@example.org", f"Moved one patient to slot {rng.randint(0, 47)}"
                else:
                    res_by = "auto"
                last_seen = res_at
            changed = max(x for x in (first_seen, last_seen, ack_at, res_at) if x)
            refs = []
            for m in range(size):
                doc_id = f"kq{n:05d}{'abc'[m]}"
                refs.append({"source": "kloqo", "id": doc_id})
                slot = 100 + i if kind == "slot" else 600 + 3 * i + m
                token = f"S{i}-{'abc'[m]}" if kind == "slot" else key
                # A resolved duplicate is one whose extra documents were cancelled.
                status = "Cancelled" if (state == "resolved" and m > 0) else ("Completed" if age > 0 else "Pending")
                doc_created = written - timedelta(minutes=rng.uniform(1, 300)) if m < size - 1 else written
                doc_updated = res_at if status == "Cancelled" else doc_created
                received = doc_updated + timedelta(milliseconds=rng.randint(50, 400))
                doc = {"clinicId": c["id"], "doctorId": doctor_id, "doctor": doctor_name,
                       "date": day.isoformat(), "sessionIndex": 0, "slotIndex": slot,
                       "numericToken": slot + 1, "tokenNumber": token, "status": status,
                       "bookedVia": "Online", "patientName": f"Kloqo patient {n}{'abc'[m]}",
                       "createdAt": {"_seconds": int(doc_created.timestamp()), "_nanoseconds": 0}}
                version = int(doc_updated.timestamp() * 1_000_000)
                members.append(("kloqo", doc_id, c["id"], doctor_id, day.isoformat(), 0, slot, token, status,
                                0 if status == "Cancelled" else 1, 0, "Online", ts(doc_created), ts(doc_updated),
                                version, 0, ts(received), json.dumps(doc, separators=(",", ":"))))
                self.day_counts[(c["id"], day.isoformat())] = self.day_counts.get((c["id"], day.isoformat()), 0) + 1
            row = (uuid4(rng), c["id"], doctor_id, day.isoformat(), kind, key, state,
                   "audit" if audit_found else "realtime", json.dumps(refs, separators=(",", ":")), size,
                   0, ts(first_seen), ts(last_seen), ts(changed), detection_ms,
                   ts(ack_at) if ack_at else None, ack_by, ts(res_at) if res_at else None, res_by, note,
                   ts(first_seen + timedelta(seconds=1)))
            incidents.append(row)
            self.incident_rows.append((c["id"], day.isoformat(), audit_found, size, first_seen, res_at))
        self.counts["incidents"] = len(incidents)
        self.counts["watched_appointments"] = len(members)
        self.counts["incident_states"] = {s: sum(1 for r in incidents if r[6] == s)
                                          for s in ("open", "acknowledged", "resolved")}
        return incidents, members

    def audit_rows(self):
        """A succeeded nightly run per clinic and day, up to the latest day due (so the
        auditor has nothing to catch up at start), with the counts it would have found."""
        by_day = {}
        for clinic, day, audit_found, size, first_seen, res_at in self.incident_rows:
            by_day.setdefault((clinic, day), []).append((audit_found, size, first_seen, res_at))
        rng = self.rng
        made = 0
        for c in self.clinics:
            local_now = self.now + c["offset"]
            latest = local_now.date() if local_now.hour >= 23 else local_now.date() - timedelta(days=1)
            day = c["today"] - timedelta(days=self.days_back)
            while day <= latest:
                started = self.local(c, day, 23 * 60) + timedelta(seconds=rng.uniform(0.5, 3))
                if started > self.latest:
                    started = self.latest
                found = [x for x in by_day.get((c["id"], day.isoformat()), [])
                         if x[2] <= started + timedelta(seconds=30) and (x[3] is None or x[3] > started)]
                groups = len(found)
                extra = sum(size - 1 for _, size, _, _ in found)
                affected = sum(size for _, size, _, _ in found)
                opened = sum(1 for a, _, _, _ in found if a)
                yield (uuid4(rng), c["id"], day.isoformat(), 1, "nightly", "bench-loader", "succeeded",
                       ts(started), ts(started + timedelta(seconds=rng.uniform(0.3, 2.5))),
                       self.day_counts.get((c["id"], day.isoformat()), 0), groups, extra, affected, opened, 0, None)
                made += 1
                day += timedelta(days=1)
        self.counts["audit_runs"] = made


COLUMNS = {
    "clinics": "id, name, timezone, walk_in_reserve_bp, min_lead_minutes, created_at, updated_at, audit_at",
    "doctors": "clinic_id, id, name, slot_minutes, availability, date_overrides, created_at, updated_at",
    "appointments": "id, clinic_id, doctor_id, date, session_index, slot_index, time, kind, numeric_token, "
                    "token_number, status, patient_name, patient_phone, booked_via, created_at, updated_at, "
                    "previous_appointment_id",
    "booking_rollups": "clinic_id, day, hour, doctor_id, kind, outcome, count, retries, latency_us_sum",
    "booking_totals": "kind, outcome, count, retries",
    "incidents": "id, clinic_id, doctor_id, date, kind, key, state, found_by, members, member_count, "
                 "regressions, first_seen, last_seen, changed_at, detection_ms, acknowledged_at, "
                 "acknowledged_by, resolved_at, resolved_by, note, last_notified_at",
    "watched_appointments": "source, id, clinic_id, doctor_id, date, session_index, slot_index, token_number, "
                            "status, occupying, is_break, booked_via, created_at, updated_at, version, deleted, "
                            "received_at, document",
    "audit_runs": "id, clinic_id, local_date, scheduled, trigger, runner, status, started_at, finished_at, "
                  "appointments_checked, duplicate_groups, extra_rows, affected_rows, incidents_opened, "
                  "incidents_resolved, error",
}


def tables(ds):
    """(table, rows) in loading order; later generators use what earlier ones counted."""
    yield "clinics", ds.clinic_rows()
    yield "doctors", ds.doctor_rows()
    yield "appointments", ds.appointment_rows()
    incidents, members = ds.incidents_and_members()
    yield "incidents", iter(incidents)
    yield "watched_appointments", iter(members)
    yield "booking_rollups", ds.rollup_rows()
    yield "booking_totals", ds.total_rows()
    yield "audit_runs", ds.audit_rows()


def load_sqlite(ds, path):
    con = sqlite3.connect(path, isolation_level=None)
    # Loading only: the server opens the file in WAL mode again (sqlx sets it).
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-1048576")
    timings = {}
    for name, rows in tables(ds):
        t = time.perf_counter()
        cols = COLUMNS[name]
        marks = ", ".join("?" * (cols.count(",") + 1))
        con.execute("BEGIN")
        con.executemany(f"INSERT INTO {name} ({cols}) VALUES ({marks})", rows)
        con.execute("COMMIT")
        timings[name] = round(time.perf_counter() - t, 1)
        print(f"[load] sqlite {name}: {timings[name]} s", file=sys.stderr)
    con.execute("PRAGMA journal_mode=WAL")
    con.close()
    return timings


def copy_text(value):
    if value is None:
        return "\\N"
    if isinstance(value, str):
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def load_postgres(ds, psql, dsn):
    env = dict(os.environ, PGOPTIONS="-c synchronous_commit=off -c client_min_messages=warning")
    proc = subprocess.Popen([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", "-"],
                            stdin=subprocess.PIPE, text=True, env=env, bufsize=1 << 20)
    timings = {}
    out = proc.stdin
    for name, rows in tables(ds):
        t = time.perf_counter()
        out.write(f"COPY {name} ({COLUMNS[name]}) FROM STDIN;\n")
        batch = []
        for row in rows:
            batch.append("\t".join(map(copy_text, row)))
            if len(batch) >= 10000:
                out.write("\n".join(batch) + "\n")
                batch.clear()
        if batch:
            out.write("\n".join(batch) + "\n")
        out.write("\\.\n")
        timings[name] = round(time.perf_counter() - t, 1)
        print(f"[load] postgres {name}: generated and sent in {timings[name]} s", file=sys.stderr)
    out.close()
    if proc.wait() != 0:
        sys.exit("psql COPY failed")
    t = time.perf_counter()
    # VACUUM as well as ANALYZE: autovacuum would otherwise vacuum the new rows (and
    # set the visibility map that index-only scans need) in the middle of the run.
    for sql in ("VACUUM (ANALYZE)", "CHECKPOINT"):
        subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql], check=True, env=env)
    timings["vacuum_analyze_checkpoint"] = round(time.perf_counter() - t, 1)
    return timings


def cmd_load(opts):
    now = datetime.now(timezone.utc)
    ds = DataSet(now, clinics=int(opts.get("clinics", 50)), appointments=int(opts.get("appointments", 1_000_000)),
                 incidents=int(opts.get("incidents", 10_000)), seed=int(opts.get("seed", 1)))
    t = time.perf_counter()
    if opts["store"] == "sqlite":
        timings = load_sqlite(ds, opts["db"])
    else:
        timings = load_postgres(ds, opts["psql"], opts["dsn"])
    result = {
        "loadedAt": now.isoformat(timespec="seconds"), "seconds": round(time.perf_counter() - t, 1),
        "secondsByTable": timings, "rows": ds.counts, "clinics": len(ds.clinics),
        "doctors": len(ds.clinics) * DOCTORS_PER_CLINIC,
        "zones": {z: sum(1 for c in ds.clinics if c["zone"] == z) for z in ZONES},
        "dates": {"from": (min(c["today"] for c in ds.clinics) - timedelta(days=ds.days_back)).isoformat(),
                  "to": (max(c["today"] for c in ds.clinics) + timedelta(days=ds.days_ahead)).isoformat(),
                  "daysBack": ds.days_back, "daysAhead": ds.days_ahead},
        # For the SSE measurement: a clinic in India, its doctor, today there.
        "sse": {"clinic": ds.clinics[0]["id"], "doctor": ds.clinics[0]["doctors"][0][0],
                "doctorName": ds.clinics[0]["doctors"][0][1], "date": ds.clinics[0]["today"].isoformat()},
    }
    with open(opts["out"], "w") as f:
        json.dump(result, f, indent=2)
    print(f"[load] {opts['store']}: {json.dumps(ds.counts)} in {result['seconds']} s", file=sys.stderr)


# ---- the server: login, settling ------------------------------------------------------

def split_url(url):
    u = urllib.parse.urlsplit(url)
    return u.hostname, u.port or 80


def cmd_login(opts):
    host, port = split_url(opts["url"])
    conn = http.client.HTTPConnection(host, port, timeout=30)
    body = urllib.parse.urlencode({"email": opts["email"], "password": opts["password"], "next": "/"})
    conn.request("POST", "/login", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    resp = conn.getresponse()
    resp.read()
    cookie = None
    for k, v in resp.getheaders():
        if k.lower() == "set-cookie" and v.startswith("sg_session="):
            cookie = v.split(";", 1)[0].split("=", 1)[1]
    if resp.status != 303 or not cookie:
        sys.exit(f"login failed: {resp.status} {resp.getheaders()}")
    with open(opts["out"], "w") as f:
        f.write(cookie)


def cmd_settle(opts):
    pid = int(opts["pid"])
    deadline = time.time() + float(opts.get("max-wait", 180))
    time.sleep(float(opts.get("min-wait", 3)))
    while True:
        a = probe.process_cpu(pid)
        time.sleep(2)
        b = probe.process_cpu(pid)
        if a is None or b is None:
            sys.exit("the server is gone")
        pct = 100 * (b - a) / 2
        if pct < 3 or time.time() > deadline:
            print(f"[settle] server at {pct:.1f} % of a core over 2 s", file=sys.stderr)
            return
        print(f"[settle] server still busy: {pct:.0f} % of a core", file=sys.stderr)


# ---- pages -----------------------------------------------------------------------------

def percentile(values, p):
    """Nearest-rank percentile (p99 of 200 samples is the 198th smallest)."""
    if not values:
        return None
    s = sorted(values)
    rank = max(1, -(-len(s) * p // 100))
    return s[int(rank) - 1]


def stats_of(ms):
    return {"n": len(ms), "p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms) if ms else None,
            "mean": sum(ms) / len(ms) if ms else None}


PAGES = ["/healthz", "/", "/incidents", "/fragments/overview", "/incidents?state=open"]


def cmd_pages(opts):
    host, port = split_url(opts["url"])
    cookie = open(opts["cookie-file"]).read().strip()
    n, warmup = int(opts.get("n", 200)), int(opts.get("warmup", 20))
    max_seconds = float(opts.get("max-seconds", 900))
    headers = {"Cookie": f"sg_session={cookie}", "Accept": "text/html"}
    conn = http.client.HTTPConnection(host, port, timeout=120)
    tag = opts.get("tag", "bench")

    def get(path, request_id=None):
        t = time.perf_counter()
        # The server logs this id with its own time for the request (see `summary`).
        conn.request("GET", path, headers=dict(headers, **({"X-Request-Id": request_id} if request_id else {})))
        resp = conn.getresponse()
        body = resp.read()
        ms = 1000 * (time.perf_counter() - t)
        return resp, body, ms

    samples = {p: [] for p in PAGES}
    info = {}
    t0 = time.perf_counter()
    first = {}
    for p in PAGES:
        resp, body, first[p] = get(p)
        if resp.status != 200:
            sys.exit(f"{p}: {resp.status}: {body[:300]!r}")
        info[p] = {"status": resp.status, "bytes": len(body), "contentEncoding": resp.getheader("Content-Encoding"),
                   "contentType": resp.getheader("Content-Type")}
        name = "overview" if p == "/" else re.sub(r"[^a-z0-9]+", "_", p.lower()).strip("_")
        with open(os.path.join(opts["bodies"], f"{name}.html"), "wb") as f:
            f.write(body)
    for _ in range(warmup):
        for p in PAGES:
            get(p)
    rounds = 0
    measured_from = time.perf_counter()
    sizes = {p: set() for p in PAGES}
    statuses = {p: {} for p in PAGES}
    while rounds < n and time.perf_counter() - measured_from < max_seconds:
        for p in PAGES:
            resp, body, ms = get(p, f"bd-{tag}-{PAGES.index(p)}-{rounds}")
            samples[p].append(ms)
            sizes[p].add(len(body))
            statuses[p][resp.status] = statuses[p].get(resp.status, 0) + 1
        rounds += 1
    # The overview's live part is kept rendered 5 s while no incident changes: a request
    # after that renders it anew (from the day counts kept in web/counts.rs). Time a few
    # such requests, each over a minute after the last.
    cold = []
    for i in range(int(opts.get("cold", 0))):
        time.sleep(float(opts.get("cold-wait", 65)))
        conn.close()
        resp, body, ms = get("/", f"bd-{tag}-cold-{i}")
        cold.append(ms)
    result = {"rounds": rounds, "roundsWanted": n, "warmup": warmup, "seconds": time.perf_counter() - t0,
              "capped": rounds < n, "pages": {}, "firstOverviewMs": round(first["/"], 3), "coldOverview": stats_of(cold) if cold else None,
              "coldOverviewSamples": [round(x, 3) for x in cold]}
    for p in PAGES:
        result["pages"][p] = dict(stats_of(samples[p]), **info[p], bytesMin=min(sizes[p]), bytesMax=max(sizes[p]),
                                  statuses=statuses[p], samples=[round(x, 3) for x in samples[p]])
    with open(opts["out"], "w") as f:
        json.dump(result, f, indent=2)
    for p in PAGES:
        r = result["pages"][p]
        print(f"[pages] {p}: p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms, "
              f"{r['bytes']} bytes", file=sys.stderr)


# ---- live updates (SSE) ------------------------------------------------------------------

async def http_request(host, port, method, path, headers, body=b""):
    """One request on its own connection; (status, body bytes)."""
    reader, writer = await asyncio.open_connection(host, port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
             f"Content-Length: {len(body)}"] + [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length, chunked = None, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        if k.strip().lower() == "content-length":
            length = int(v)
        if k.strip().lower() == "transfer-encoding" and "chunked" in v.lower():
            chunked = True
    if chunked:
        data = b""
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                break
            data += (await reader.readexactly(size + 2))[:-2]
    elif length is not None:
        data = await reader.readexactly(length)
    else:
        data = await reader.read()
    writer.close()
    return status, data


class Streams:
    def __init__(self, n):
        self.n = n
        self.connected = [None] * n
        self.trial = None
        self.seen = {}  # trial -> {stream: perf_counter of its first event}
        self.data = {}  # trial -> {stream: the event's data line}
        self.reloads = {}  # trial -> {stream: (perf_counter when the reload finished, bytes, status)}
        self.reload_trial = None
        self.errors = []
        self.all_seen = {}
        self.tasks = []


async def stream(i, host, port, cookie, st):
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write((f"GET /events HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
                      f"Cookie: sg_session={cookie}\r\n\r\n").encode())
        await writer.drain()
        status_line = await reader.readline()
        chunked = False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            if k.strip().lower() == "transfer-encoding" and "chunked" in v.lower():
                chunked = True
        if b" 200 " not in status_line:
            st.errors.append(f"stream {i}: {status_line!r}")
            return
        st.connected[i] = time.perf_counter()
        buf = b""
        pending_event = False
        while True:
            if chunked:
                size_line = await reader.readline()
                if not size_line:
                    return
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    return
                data = (await reader.readexactly(size + 2))[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.rstrip(b"\r")
                if line == b"event: incident":
                    now = time.perf_counter()
                    t = st.trial
                    if t is not None and i not in st.seen[t]:
                        st.seen[t][i] = now
                        pending_event = True
                        if len(st.seen[t]) == st.n:
                            st.all_seen[t].set()
                        if t == st.reload_trial:
                            asyncio.get_running_loop().create_task(reload(i, t, host, port, cookie, st))
                elif line.startswith(b"data:") and pending_event:
                    st.data[st.trial][i] = line[5:].strip().decode()
                    pending_event = False
    except (OSError, asyncio.IncompleteReadError, ValueError) as e:
        st.errors.append(f"stream {i}: {e!r}")


async def reload(i, t, host, port, cookie, st):
    """What the page's htmx does on the event: reload the live region."""
    status, body = await http_request(host, port, "GET", "/fragments/overview",
                                      {"Cookie": f"sg_session={cookie}", "HX-Request": "true"})
    st.reloads[t][i] = (time.perf_counter(), len(body), status)


def memory(pid):
    m = probe.process_memory(pid)
    return {"VmRSSkB": m.get("VmRSSkB"), "VmHWMkB": m.get("VmHWMkB")}


async def sse_main(opts):
    host, port = split_url(opts["url"])
    cookie = open(opts["cookie-file"]).read().strip()
    key = open(opts["key-file"]).read().strip()
    n, trials = int(opts.get("streams", 200)), int(opts.get("trials", 3))
    pid = int(opts["server-pid"])
    st = Streams(n)
    result = {"streams": n, "trials": [], "memory": {}}
    result["memory"]["before"] = memory(pid)

    # Sample the server's RSS while streams are open.
    rss_max = {"kB": 0}
    sampling = {"on": True}

    async def sampler():
        while sampling["on"]:
            rss = probe.process_memory(pid).get("VmRSSkB") or 0
            rss_max["kB"] = max(rss_max["kB"], rss)
            await asyncio.sleep(0.1)

    sampler_task = asyncio.get_running_loop().create_task(sampler())
    t_open = time.perf_counter()
    gate = asyncio.Semaphore(50)

    async def open_one(i):
        async with gate:
            task = asyncio.get_running_loop().create_task(stream(i, host, port, cookie, st))
            st.tasks.append(task)
            while st.connected[i] is None and not task.done():
                await asyncio.sleep(0.005)

    await asyncio.gather(*(open_one(i) for i in range(n)))
    connected = sum(1 for c in st.connected if c is not None)
    result["connected"] = connected
    result["connectSeconds"] = time.perf_counter() - t_open
    if connected < n:
        result["errors"] = st.errors[:20]
    print(f"[sse] {connected}/{n} streams connected in {result['connectSeconds']:.2f} s", file=sys.stderr)
    await asyncio.sleep(2)
    result["memory"]["open"] = memory(pid)

    watch_headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    stamp = int(time.time())
    plan = [("event", t) for t in range(trials)]
    if "reload" in opts:
        plan.append(("reload", trials))
    for kind, t in plan:
        st.seen[t], st.data[t], st.reloads[t] = {}, {}, {}
        st.all_seen[t] = asyncio.Event()
        if kind == "reload":
            # What the event trials saw, before 200 reloads change the picture.
            result["memory"]["openAfterEvents"] = memory(pid)
            result["memory"]["rssMaxWhileOpenkB"] = rss_max["kB"]
            rss_max["kB"] = 0
            st.reload_trial = t
        slot = int(opts.get("first-slot", 500)) + t
        docs = []
        for m in range(2):
            doc = {"clinicId": opts["clinic"], "doctorId": opts["doctor"], "doctor": opts["doctor-name"],
                   "date": opts["date"], "sessionIndex": 0, "slotIndex": slot, "numericToken": 900 + 2 * t + m,
                   # Tokens of their own (no generated row uses B-…): one slot incident a trial.
                   "tokenNumber": f"B-{stamp % 100000}-{t}{'ab'[m]}", "status": "Pending", "bookedVia": "Online",
                   "patientName": f"Bench {t}{'ab'[m]}", "createdAt": {"_seconds": int(time.time()), "_nanoseconds": 0}}
            docs.append((f"bench-sse-{stamp}-{t}-{'ab'[m]}", json.dumps(doc).encode()))
        st.trial = t
        put_ms = []
        for doc_id, body in docs:
            t_put = time.perf_counter()
            status, answer = await http_request(host, port, "PUT", f"/api/v1/watch/kloqo/appointments/{doc_id}",
                                                watch_headers, body)
            put_ms.append(1000 * (time.perf_counter() - t_put))
            if status not in (200, 201):
                sys.exit(f"watch PUT {doc_id}: {status} {answer[:300]!r}")
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(st.all_seen[t].wait(), timeout=10)
        except asyncio.TimeoutError:
            pass
        if kind == "reload":
            deadline = time.perf_counter() + 900
            while len(st.reloads[t]) < len(st.seen[t]) and time.perf_counter() < deadline:
                await asyncio.sleep(0.01)
        lat = [1000 * (st.seen[t][i] - t0) for i in sorted(st.seen[t])]
        trial = {"kind": kind, "slot": slot, "putMs": put_ms, "saw": len(lat),
                 "withinMs": sum(1 for x in lat if x <= SSE_WITHIN_MS),
                 "eventMs": stats_of(lat), "samplesMs": [round(x, 3) for x in lat],
                 "eventBeforeAnswer": sum(1 for x in lat if x < 0),
                 "incidentIds": sorted(set(st.data[t].values())),
                 "memoryAfter": memory(pid)}
        if kind == "reload":
            rl = [1000 * (v[0] - t0) for v in st.reloads[t].values()]
            trial["reloadMs"] = stats_of(rl)
            trial["reloadStatuses"] = sorted({v[2] for v in st.reloads[t].values()})
            trial["reloadBytes"] = sorted({v[1] for v in st.reloads[t].values()})[:3]
            trial["reloadSamplesMs"] = [round(x, 3) for x in sorted(rl)]
        result["trials"].append(trial)
        st.trial = None
        msg = (f"[sse] trial {t} ({kind}): {len(lat)}/{n} saw it; p50 {trial['eventMs']['p50']:.1f} ms, "
               f"p99 {trial['eventMs']['p99']:.1f} ms, max {trial['eventMs']['max']:.1f} ms")
        if kind == "reload":
            msg += f"; reloads done: p50 {trial['reloadMs']['p50']:.0f} ms, max {trial['reloadMs']['max']:.0f} ms"
        print(msg, file=sys.stderr)
        await asyncio.sleep(2)
    result["memory"]["openEnd"] = memory(pid)
    if "reload" in opts:
        result["memory"]["rssMaxReloadkB"] = rss_max["kB"]
    else:
        result["memory"]["openAfterEvents"] = result["memory"]["openEnd"]
        result["memory"]["rssMaxWhileOpenkB"] = rss_max["kB"]
    sampling["on"] = False
    await sampler_task
    for task in st.tasks:
        task.cancel()
    await asyncio.gather(*st.tasks, return_exceptions=True)
    await asyncio.sleep(3)
    result["memory"]["closed"] = memory(pid)
    if st.errors:
        result["streamErrors"] = st.errors[:20]
    with open(opts["out"], "w") as f:
        json.dump(result, f, indent=2)


def cmd_sse(opts):
    asyncio.run(sse_main(opts))


# ---- the server's own timing, from its request log ------------------------------------------

FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')


def server_log_times(path):
    """The `ms` the server logged (`slotguard::request`) for each measured request,
    per page, found by the X-Request-Id `pages` sent (bd-STORE-PAGE-ROUND)."""
    out = {}
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return out
    for line in lines:
        if "slotguard::request" not in line or "request_id=bd-" not in line:
            continue
        f = {k: v.strip('"') for k, v in FIELD.findall(re.sub(r"\x1b\[[0-9;]*m", "", line))}
        try:
            part = f["request_id"].split("-")[2]
            page = "cold /" if part == "cold" else PAGES[int(part)]
            out.setdefault(page, []).append(float(f["ms"]))
        except (KeyError, IndexError, ValueError):
            continue
    return out


# ---- query plans ------------------------------------------------------------------------------

INCIDENT_COLUMNS = ("id, clinic_id, doctor_id, date, kind, key, state, found_by, members, member_count, "
                    "regressions, first_seen, last_seen, changed_at, detection_ms, acknowledged_at, "
                    "acknowledged_by, resolved_at, resolved_by, note, last_notified_at, revision")
AUDIT_RUN_COLUMNS = ("id, clinic_id, local_date, trigger, runner, status, started_at, finished_at, "
                     "appointments_checked, duplicate_groups, extra_rows, affected_rows, incidents_opened, "
                     "incidents_resolved, error")


def page_queries(today, clinic, doctor, since):
    """The statements GET / and GET /incidents run, as src/ had them when this was
    written (the overview keeps what it read in web/counts.rs), with the
    values the overview computes for an admin (every clinic, the display day in
    Asia/Kolkata): (name, how often, SQL with $n, [(type, value)]). Update this list
    when the pages' queries change."""
    monday = today - timedelta(days=today.weekday())
    sunday = monday + timedelta(days=6)
    frm = min(today - timedelta(days=29), monday) - timedelta(days=1)
    to = sunday + timedelta(days=1)
    recent = today - timedelta(days=1)
    closed = [("text", None), ("date", frm.isoformat()), ("date", (recent - timedelta(days=1)).isoformat())]
    fresh = [("text", None), ("date", recent.isoformat()), ("date", (today + timedelta(days=1)).isoformat())]
    outcomes = ("SELECT clinic_id, day, CAST(hour AS BIGINT) AS hour, outcome, CAST(SUM(count) AS BIGINT) AS count, "
                "CAST(SUM(retries) AS BIGINT) AS retries FROM booking_rollups WHERE CAST($1 AS TEXT) IS NULL "
                "AND day BETWEEN $2 AND $3 GROUP BY day, clinic_id, hour, outcome")
    one_clinic = [("text", clinic), ("date", frm.isoformat()), ("date", to.isoformat())]
    day_appointments = ("SELECT clinic_id, date, COUNT(*) AS count FROM ( SELECT clinic_id, date FROM appointments "
                        "WHERE clinic_id = $1 AND date BETWEEN $2 AND $3 UNION ALL SELECT clinic_id, "
                        "date FROM watched_appointments WHERE clinic_id = $1 AND date BETWEEN $2 AND $3 "
                        "AND deleted = 0 AND is_break = 0 ) AS dated GROUP BY clinic_id, date ORDER BY clinic_id, date")
    incidents_dated = ("SELECT * FROM incidents WHERE clinic_id = $1 AND date BETWEEN $2 AND $3 "
                       "ORDER BY clinic_id, date, doctor_id, kind, key")
    return [
        ("overview, closed days: OUTCOMES (store/metrics.rs), kept per view until the dates move on",
         "once a day per view", outcomes, closed),
        ("overview, yesterday to tomorrow: OUTCOMES", "every render", outcomes, fresh),
        ("overview: DAY_APPOINTMENTS of one clinic, kept per clinic and day until one is written (web/counts.rs)",
         "per clinic, for the days written since the last render", day_appointments, one_clinic),
        ("overview: INCIDENTS_DATED of one clinic, kept per clinic until one of its incidents changes",
         "per clinic whose incidents changed", incidents_dated, one_clinic),
        ("overview: incident_tallies (store/dashboard.rs)", "every overview",
         "SELECT clinic_id, state, COUNT(*) AS n FROM incidents GROUP BY clinic_id, state", []),
        ("overview: freshness, audit runs of the last 3 days (web/pages/overview.rs audit_state)", "every overview",
         f"SELECT {AUDIT_RUN_COLUMNS} FROM audit_runs WHERE ($1 IS NULL OR clinic_id = $1) AND local_date >= $2 "
         "AND local_date <= $3 ORDER BY local_date, started_at, id",
         [("text", None), ("date", (today - timedelta(days=2)).isoformat()), ("date", today.isoformat())]),
        ("both: SEEN_CLINICS for the clinic picker (store/dashboard.rs)", "every page",
         "WITH RECURSIVE w(id) AS (SELECT MIN(clinic_id) FROM watched_appointments UNION ALL SELECT (SELECT "
         "MIN(clinic_id) FROM watched_appointments WHERE clinic_id > w.id) FROM w WHERE w.id IS NOT NULL), "
         "i(id) AS (SELECT MIN(clinic_id) FROM incidents UNION ALL SELECT (SELECT MIN(clinic_id) FROM incidents "
         "WHERE clinic_id > i.id) FROM i WHERE i.id IS NOT NULL) SELECT id AS clinic_id FROM w WHERE id IS NOT NULL "
         "UNION SELECT id AS clinic_id FROM i WHERE id IS NOT NULL ORDER BY clinic_id", []),
        ("both: newest incidents (incident_page)", "every page",
         f"SELECT {INCIDENT_COLUMNS} FROM incidents ORDER BY first_seen DESC, id DESC LIMIT $1", [("bigint", 51)]),
        ("incidents: incident_count", "every page", "SELECT COUNT(*) AS n FROM incidents", []),
        ("incidents?state=open: incident_page", "every page",
         f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE state = $1 ORDER BY first_seen DESC, id DESC LIMIT $2",
         [("text", "open"), ("bigint", 51)]),
        ("incidents?state=open: incident_count", "every page",
         "SELECT COUNT(*) AS n FROM incidents WHERE state = $1", [("text", "open")]),
        ("background: incidents_touched_since (web/live.rs)", "every second",
         "SELECT id, clinic_id, changed_at, acknowledged_at, resolved_at FROM incidents "
         "WHERE changed_at >= $1 OR acknowledged_at >= $1 OR resolved_at >= $1",
         [("timestamptz", since)]),
    ]


def cmd_explain(opts):
    info = load_json(opts["load"]) or {}
    sse = info.get("sse", {})
    now = datetime.now(timezone.utc)
    today = (now + ZONES["Asia/Kolkata"]).date()
    since = ts(now - timedelta(seconds=10))
    queries = page_queries(today, sse.get("clinic", "clinic-01"), sse.get("doctor", "dr-1"), since)
    out = []
    if opts["store"] == "sqlite":
        con = sqlite3.connect(opts["db"])
        out.append(f"SQLite {sqlite3.sqlite_version} (Python's; slotguard bundles its own build). "
                   "Time: median of 5 runs in this process, warm cache.\n")
        for name, per, sql, params in queries:
            args = {str(i + 1): v for i, (_, v) in enumerate(params)}
            try:
                plan = con.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
                runs = []
                for _ in range(5):
                    t = time.perf_counter()
                    rows = con.execute(sql, args).fetchall()
                    runs.append(1000 * (time.perf_counter() - t))
            except sqlite3.Error as e:
                out.extend([f"== {name} [{per}]: {e} (the schema differs from the one this list was written for)", ""])
                continue
            out.append(f"== {name} [{per}]: {sorted(runs)[2]:.2f} ms, {len(rows)} rows")
            out.append(sql)
            out.extend(f"  {'  ' * (0 if r[1] == 0 else 1)}{r[3]}" for r in plan)
            out.append("")
    else:
        psql, dsn = opts["psql"], opts["dsn"]
        out.append("PostgreSQL: each statement PREPAREd and EXECUTEd 6 times first, as sqlx's prepared "
                   "statements are (so the plan is the one the server settles on, generic or custom).\n")
        for i, (name, per, sql, params) in enumerate(queries):
            types = ", ".join(t for t, _ in params)
            values = ", ".join("NULL" if v is None else (str(v) if t == "bigint" else "'" + v + "'")
                               for t, v in params)
            prep = f"PREPARE q{i}" + (f" ({types})" if params else "") + f" AS {sql};"
            execute = f"EXECUTE q{i}" + (f"({values})" if params else "") + ";"
            script = ("SET client_min_messages = warning;\n\\o /dev/null\n" + prep + "\n" + execute * 6 +
                      "\n\\o\nEXPLAIN (ANALYZE, BUFFERS) " + execute + "\n")
            r = subprocess.run([psql, "-X", "-q", "-d", dsn], input=script, capture_output=True, text=True)
            out.append(f"== {name} [{per}]")
            out.append(sql)
            out.append((r.stdout + r.stderr).rstrip())
            out.append("")
    with open(opts["out"], "w") as f:
        f.write("\n".join(out) + "\n")


def cmd_statements(opts):
    """Per page: the statements PostgreSQL ran for it (pg_stat_statements), per request.
    The server's background work (the detector's re-scan, the live pages' follower,
    lease renewals) runs meanwhile and is counted too; it is marked."""
    host, port = split_url(opts["url"])
    cookie = open(opts["cookie-file"]).read().strip()
    psql, dsn = opts["psql"], opts["dsn"]
    n = int(opts.get("n", 3))
    background = ("INTO leases", "FROM leases WHERE name LIKE", "changed_at >=", "received_at >=", "updated_at >=",
                  "pg_stat_statements", "LISTEN", "audit_runs WHERE clinic_id = $1 AND scheduled")
    out = []
    for path in ("/", "/incidents"):
        conn = http.client.HTTPConnection(host, port, timeout=120)
        conn.request("GET", path, headers={"Cookie": f"sg_session={cookie}"})
        conn.getresponse().read()  # warm
        probe.psql_run(psql, dsn, "SELECT pg_stat_statements_reset()")
        t = time.perf_counter()
        for _ in range(n):
            conn.request("GET", path, headers={"Cookie": f"sg_session={cookie}"})
            conn.getresponse().read()
        wall = time.perf_counter() - t
        rows = probe.psql_run(psql, dsn, probe.STATEMENTS.replace("ORDER BY calls DESC", "ORDER BY total_exec_time DESC")) or ""
        total_calls = total_ms = 0
        lines = []
        for line in rows.splitlines():
            parts = line.split("\t")
            if len(parts) < 4:
                continue
            calls, _, ms, query = int(parts[0]), parts[1], float(parts[2]), parts[3]
            bg = any(b in query for b in background)
            if not bg:
                total_calls += calls
                total_ms += ms
            lines.append(f"{calls / n:7.1f} calls  {ms / n:8.2f} ms  {'(background) ' if bg else ''}{query[:400]}")
        out.append(f"== GET {path}: {n} requests in {1000 * wall / n:.0f} ms each; per request, not counting "
                   f"background: {total_calls / n:.0f} statements, {total_ms / n:.1f} ms inside PostgreSQL")
        out.append("per request: calls, time inside PostgreSQL, statement (slowest first)")
        out.extend(lines)
        out.append("")
    with open(opts["out"], "w") as f:
        f.write("\n".join(out) + "\n")


# ---- summary and tables -----------------------------------------------------------------------

def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def cmd_summary(opts):
    d, store = opts["dir"], opts["store"]
    part = lambda name: load_json(os.path.join(d, f"dashboard-{store}-{name}.json"))
    pages = part("pages")
    summary = {"store": store, "machine": part("machine"), "load": part("load"), "pages": pages,
               "pagesProbe": part("pages.probe"), "sse": part("sse"), "sseProbe": part("sse.probe"),
               "sseFresh": part("sse-fresh"), "sseFreshProbe": part("sse-fresh.probe"),
               "postgres": (open(os.path.join(d, "dashboard-postgres-version.txt")).read().strip()
                            if store == "postgres" and os.path.exists(os.path.join(d, "dashboard-postgres-version.txt"))
                            else None)}
    times = server_log_times(os.path.join(d, f"dashboard-{store}.server.log"))
    summary["serverLogMs"] = {p: stats_of(times[p]) for p in PAGES + ["cold /"] if p in times}
    with open(os.path.join(d, f"dashboard-{store}.json"), "w") as f:
        json.dump(summary, f, indent=2)


def fmt_ms(x):
    return "–" if x is None else (f"{x:,.1f}" if x < 100 else f"{x:,.0f}")


def mb(kb):
    return "–" if kb is None else f"{kb / 1024:.1f} MB"


def noise_note(p):
    v = probe.other_pct(p)
    return "–" if v is None else f"{v:.0f} %"


def cmd_table(files):
    out = []
    summaries = [s for s in (load_json(f) for f in files) if s]
    label = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
    out.append("| store | page | requests | p50 ms | p99 ms | max ms | bytes | p99 ÷ /healthz p99 | "
               "target (p99 < 50 ms, < 100 KB) |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for s in summaries:
        pages = s.get("pages") or {}
        base = (pages.get("pages") or {}).get("/healthz", {}).get("p99")
        for path, r in (pages.get("pages") or {}).items():
            if path == "/healthz":
                verdict = "baseline"
            else:
                miss = []
                if r["p99"] >= PAGE_P99_MS:
                    miss.append(f"p99 {r['p99'] / PAGE_P99_MS:.1f}× the limit")
                if r["bytesMax"] >= PAGE_BYTES:
                    miss.append(f"{r['bytesMax'] / 1000:.0f} KB")
                verdict = "met" if not miss else "**missed**: " + ", ".join(miss)
                if path not in ("/", "/incidents"):
                    verdict += " (not in the issue)"
            ratio = "1" if path == "/healthz" else (f"{r['p99'] / base:,.0f}" if base else "–")
            size = f"{r['bytes']:,}" if r["bytesMin"] == r["bytesMax"] else f"{r['bytesMin']:,}–{r['bytesMax']:,}"
            out.append(f"| {label.get(s['store'], s['store'])} | `GET {path}` | {r['n']} | {fmt_ms(r['p50'])} | "
                       f"{fmt_ms(r['p99'])} | {fmt_ms(r['max'])} | {size} | {ratio} | {verdict} |")
        if pages.get("firstOverviewMs") is not None:
            ms = pages["firstOverviewMs"]
            out.append(f"| {label.get(s['store'], s['store'])} | `GET /`, the first after the server started "
                       f"(nothing kept yet) | 1 | – | – | {fmt_ms(ms)} | | {ms / base:,.0f} | once per start |")
        cold = pages.get("coldOverview")
        if cold:
            verdict = "met" if cold["max"] < PAGE_P99_MS else f"**missed**: {cold['max'] / PAGE_P99_MS:.1f}× the limit"
            out.append(f"| {label.get(s['store'], s['store'])} | `GET /` rendered anew "
                       f"(each over a minute after the last request) | {cold['n']} | {fmt_ms(cold['p50'])} | – | "
                       f"{fmt_ms(cold['max'])} | | {cold['max'] / base:,.0f} (max) | {verdict} |")
    out.append("")
    if any(s.get("serverLogMs") for s in summaries):
        out.append("The server's own time for the same requests (its request log, `ms`: from the request "
                   "reaching the router to the response handed back):\n")
        out.append("| store | page | requests | p50 ms | p99 ms | max ms | target p99 < 50 ms |")
        out.append("|---|---|---:|---:|---:|---:|---|")
        for s in summaries:
            for page, r in (s.get("serverLogMs") or {}).items():
                verdict = "–" if page == "/healthz" else ("met" if r["p99"] < PAGE_P99_MS else "**missed**")
                shown = "`GET /` rendered anew" if page == "cold /" else f"`GET {page}`"
                out.append(f"| {label.get(s['store'], s['store'])} | {shown} | {r['n']} | {fmt_ms(r['p50'])} | "
                           f"{fmt_ms(r['p99'])} | {fmt_ms(r['max'])} | {verdict} |")
        out.append("")
    out.append("| store, server | streams | incidents | saw it | p50 ms | p99 ms | max ms | within 1 s | "
               "server VmRSS before → with streams open (peak) | VmHWM | target (all within 1 s, RSS < 100 MB) |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for s in summaries:
        name = label.get(s["store"], s["store"])
        for sse, where in ((s.get("sseFresh"), "fresh (no page served)"),
                           (s.get("sse"), "after the pages above")):
            if not sse:
                continue
            mem = sse["memory"]
            events = [t for t in sse["trials"] if t["kind"] == "event"]
            lat = [x for t in events for x in t["samplesMs"]]
            e = stats_of(lat)
            wanted = sse["streams"] * len(events)
            within = sum(t["withinMs"] for t in events)
            before = (mem.get("before") or {}).get("VmRSSkB")
            rss_open = mem.get("rssMaxWhileOpenkB")
            hwm = (mem.get("openAfterEvents") or {}).get("VmHWMkB")
            miss = []
            if within < wanted:
                miss.append(f"{wanted - within} of {wanted} late or missing")
            if rss_open and rss_open >= RSS_LIMIT_KB:
                miss.append(f"RSS {rss_open / 1024:.0f} MB")
            verdict = "met" if not miss else "**missed**: " + ", ".join(miss)
            out.append(f"| {name}, {where} | {sse['streams']} | {len(events)} | {len(lat)} of {wanted} | "
                       f"{fmt_ms(e['p50'])} | {fmt_ms(e['p99'])} | {fmt_ms(e['max'])} | {within} of {wanted} | "
                       f"{mb(before)} → {mb(rss_open)} | {mb(hwm)} | {verdict} |")
            for t in sse["trials"]:
                if t["kind"] != "reload" or not t.get("reloadMs"):
                    continue
                r = t["reloadMs"]
                peak = mem.get("rssMaxReloadkB")
                ok = sum(1 for x in t["reloadSamplesMs"] if x <= SSE_WITHIN_MS)
                miss = []
                if ok < sse["streams"]:
                    miss.append(f"{sse['streams'] - ok} of {sse['streams']} over 1 s")
                if peak and peak >= RSS_LIMIT_KB:
                    miss.append(f"RSS {peak / 1024:.0f} MB")
                verdict = ("met" if not miss else "would miss: " + ", ".join(miss)) + " (not the issue's measure)"
                out.append(f"| {name}, the same, every page then reloads `/fragments/overview` as htmx does "
                           f"(200 at once) | {sse['streams']} | 1 | {len(t['reloadSamplesMs'])} reloaded | "
                           f"{fmt_ms(r['p50'])} | {fmt_ms(r['p99'])} | {fmt_ms(r['max'])} | {ok} of {sse['streams']} | "
                           f"{mb((mem.get('openAfterEvents') or {}).get('VmRSSkB'))} → {mb(peak)} | "
                           f"{mb((mem.get('closed') or {}).get('VmHWMkB'))} | {verdict} |")
    out.append("")
    notes = []
    for s in summaries:
        pp, sp, fp = s.get("pagesProbe"), s.get("sseProbe"), s.get("sseFreshProbe")
        if pp:
            notes.append(f"{label.get(s['store'], s['store'])}: other processes took {noise_note(pp)} of the machine "
                         f"during the pages ({pp['wallSeconds']:.0f} s, machine {pp['machineBusyPct']:.0f} % busy), "
                         f"{noise_note(sp)} during the streams after them, {noise_note(fp)} during the streams "
                         f"on the fresh server.")
    if notes:
        out.append("Noise: " + " ".join(notes) + "\n")
    print("\n".join(out))


def parse_opts(argv):
    opts, rest = {}, []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                opts[a[2:]] = argv[i + 1]
                i += 2
            else:
                opts[a[2:]] = True
                i += 1
        else:
            rest.append(a)
            i += 1
    return opts, rest


if __name__ == "__main__":
    commands = {"load": cmd_load, "login": cmd_login, "settle": cmd_settle, "pages": cmd_pages,
                "sse": cmd_sse, "explain": cmd_explain, "statements": cmd_statements, "summary": cmd_summary}
    if len(sys.argv) >= 2 and sys.argv[1] == "table":
        cmd_table(sys.argv[2:])
    elif len(sys.argv) >= 2 and sys.argv[1] in commands:
        commands[sys.argv[1]](parse_opts(sys.argv[2:])[0])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
