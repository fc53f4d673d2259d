#!/usr/bin/env python3
"""Raw SQLite booking transactions: the baseline slotguard's SQLite store is held to.

One connection, WAL, synchronous=FULL (slotguard's default durability), and per booking
exactly what one slotguard booking does on the writer connection:

    BEGIN IMMEDIATE;
    SELECT slot_index FROM appointments WHERE <the doctor-day> AND <occupying>;
    INSERT INTO appointments (...all columns...) VALUES (...);   -- unless the slot is taken
    COMMIT;                                                       -- one fsync per booking

Keys are the `spread` scenario's: 10 clinics x 5 doctors x 14 days, slot 0..799 at
random; a taken slot is rolled back and counted as a refusal (slotguard's 409).
The database must have been created by `slotguard migrate --database FILE`; this
script adds the clinics and doctors it books at.

    bench/sqlite_raw.py --db FILE [--seconds S] [--bookings N] [--out FILE.json]
"""

import argparse
import datetime as dt
import json
import random
import sqlite3
import sys
import time
import uuid

OCCUPIED_SLOTS = (
    "SELECT slot_index FROM appointments WHERE clinic_id = ? AND doctor_id = ? AND date = ? "
    "AND status NOT IN ('Cancelled', 'No-show')"
)
INSERT_APPOINTMENT = (
    "INSERT INTO appointments (id, clinic_id, doctor_id, date, session_index, slot_index, time, "
    "kind, numeric_token, token_number, status, patient_name, patient_phone, booked_via, "
    "created_at, updated_at, previous_appointment_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
CLINICS, DOCTORS, DAYS, SLOTS = 10, 5, 14, 800


def seed(db: sqlite3.Connection, now: str) -> None:
    db.execute("BEGIN IMMEDIATE")
    for c in range(CLINICS):
        db.execute(
            "INSERT INTO clinics (id, name, timezone, walk_in_reserve_bp, min_lead_minutes, "
            "created_at, updated_at) VALUES (?, 'Bench', 'Asia/Kolkata', 0, 0, ?, ?)",
            (f"bench-{c}", now, now),
        )
        for d in range(DOCTORS):
            db.execute(
                "INSERT INTO doctors (clinic_id, id, name, slot_minutes, availability, "
                "date_overrides, created_at, updated_at) VALUES (?, ?, 'Doctor', 1, '{}', '{}', ?, ?)",
                (f"bench-{c}", f"dr-{d}", now, now),
            )
    db.execute("COMMIT")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--seconds", type=float, default=20.0, help="stop after this long")
    ap.add_argument("--bookings", type=int, default=10**9, help="stop after this many attempts")
    ap.add_argument("--sync", choices=["full", "normal"], default="full")
    ap.add_argument("--out")
    args = ap.parse_args()

    db = sqlite3.connect(args.db, isolation_level=None)  # explicit BEGIN/COMMIT
    journal = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    db.execute(f"PRAGMA synchronous={args.sync.upper()}")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=10000")
    sync = db.execute("PRAGMA synchronous").fetchone()[0]
    now = dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    seed(db, now)

    first_day = dt.date.today() + dt.timedelta(days=7)
    booked = refused = 0
    start = time.perf_counter()
    deadline = start + args.seconds
    while booked + refused < args.bookings and time.perf_counter() < deadline:
        clinic = f"bench-{random.randrange(CLINICS)}"
        doctor = f"dr-{random.randrange(DOCTORS)}"
        day = (first_day + dt.timedelta(days=random.randrange(DAYS))).isoformat()
        slot = random.randrange(SLOTS)
        db.execute("BEGIN IMMEDIATE")
        taken = {row[0] for row in db.execute(OCCUPIED_SLOTS, (clinic, doctor, day))}
        if slot in taken:
            db.execute("ROLLBACK")
            refused += 1
            continue
        stamp = dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")
        numeric = slot + 1
        db.execute(
            INSERT_APPOINTMENT,
            (
                str(uuid.uuid4()), clinic, doctor, day, slot // 1000, slot,
                f"{slot // 60:02}:{slot % 60:02}", "advance", numeric,
                f"A{slot // 1000 + 1}-{numeric:03}", "Pending", "raw patient", None, "raw",
                stamp, stamp, None,
            ),
        )
        db.execute("COMMIT")
        booked += 1
    elapsed = time.perf_counter() - start
    result = {
        "bookings": booked,
        "refused": refused,
        "seconds": elapsed,
        "bookingsPerSecond": booked / elapsed if elapsed > 0 else 0.0,
        "attemptsPerSecond": (booked + refused) / elapsed if elapsed > 0 else 0.0,
        "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync, sync),
        "journalMode": journal,
        "sqliteVersion": sqlite3.sqlite_version,
    }
    db.close()
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
