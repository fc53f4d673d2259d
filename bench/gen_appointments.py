#!/usr/bin/env python3
"""Writes a JSON Lines export of appointments for bench/audit_file.sh, independent of
slotguard: the API's fields (camelCase, RFC 3339 times) plus four of Kloqo's that
the API does not have, as a real export carries them; Kloqo-style tokens, about 8 %
cancelled or no-show, a few break placeholders, and exactly --duplicates double
bookings (a second occupying appointment copied into a taken slot with its token).
Lines are in random order, as a Firestore export ordered by document id is.

    gen_appointments.py OUT.jsonl [--records N] [--duplicates D] [--seed S]

Prints the number of records and the expected duplicate groups.
"""

import argparse
import datetime
import json
import random
import string

FIRST_DAY = datetime.date(2026, 1, 1)
CLINICS = 60
DOCTORS_PER_CLINIC = 4
# Two sessions a day, 09:00-15:00 and 17:00-23:00, in 10-minute slots.
SESSIONS = 2
SLOTS_PER_SESSION = 36


def firestore_id(rng):
    return "".join(rng.choices(string.ascii_letters + string.digits, k=20))


def day_appointments(rng, clinic, doctor, date, stamp):
    """One doctor-day: each slot booked at most once by an occupying appointment."""
    rows = []
    for session in range(SESSIONS):
        for k in range(SLOTS_PER_SESSION):
            if rng.random() < 0.1:
                continue  # a free slot
            slot = session * 1000 + k
            token = f"A{session + 1}-{slot + 1:03}"
            status = rng.choices(
                ["Pending", "Confirmed", "Completed", "Skipped", "Cancelled", "No-show"],
                [30, 20, 38, 4, 6, 2],
            )[0]
            rows.append(appointment(rng, clinic, doctor, date, session, slot, token, status, stamp))
            if status in ("Cancelled", "No-show") and rng.random() < 0.5:
                # The freed slot booked again: two rows, one occupying, no duplicate.
                rows.append(appointment(rng, clinic, doctor, date, session, slot, token, "Pending", stamp))
        if rng.random() < 0.02:
            rows.append(
                appointment(rng, clinic, doctor, date, session, session * 1000 + SLOTS_PER_SESSION,
                            "Break", "Completed", stamp, booked_via="BreakBlock")
            )
    return rows


def appointment(rng, clinic, doctor, date, session, slot, token, status, stamp, booked_via=None):
    k = slot % 1000
    minutes = (9 * 60 if session == 0 else 17 * 60) + 10 * k
    created = stamp - rng.randrange(86400 * 14)
    return {
        "id": firestore_id(rng),
        "clinicId": clinic,
        "doctorId": doctor,
        "date": date,
        "sessionIndex": session,
        "slotIndex": slot,
        "time": f"{minutes // 60:02}:{minutes % 60:02}",
        "kind": "advance",
        "numericToken": slot + 1,
        "tokenNumber": token,
        "status": status,
        "patientName": rng.choice(["Anu A.", "Biju K.", "Chitra M.", "Deepa R.", "Hari P."]),
        "patientPhone": "+91" + "".join(rng.choices(string.digits, k=10)),
        "bookedVia": booked_via or rng.choice(["Online", "Phone", "Walk-in"]),
        "createdAt": rfc3339(created),
        "updatedAt": rfc3339(created + 60),
        "previousAppointmentId": None,
        # Fields of Kloqo's documents that the API does not have.
        "department": "General Medicine",
        "age": rng.randrange(1, 90),
        "place": rng.choice(["Kochi", "Calicut", "Thrissur"]),
        "walkInPatientsAhead": {"count": rng.randrange(5), "list": []},
    }


def rfc3339(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--records", type=int, default=5_000_000)
    parser.add_argument("--duplicates", type=int, default=25)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    stamp = 1_780_000_000
    clinics = [firestore_id(rng) for _ in range(CLINICS)]
    doctors = [(c, f"doc-{i}-{firestore_id(rng)[:9].lower()}") for c in clinics for i in range(DOCTORS_PER_CLINIC)]
    rows = []
    day = 0
    while len(rows) < args.records:
        date = (FIRST_DAY + datetime.timedelta(days=day)).isoformat()
        for clinic, doctor in doctors:
            rows.extend(day_appointments(rng, clinic, doctor, date, stamp))
        day += 1
    del rows[args.records:]
    # Double bookings: a copy of an occupying appointment under a new id, on a
    # doctor-day chosen once, so each is exactly one group (its slot and its token).
    occupying = [i for i, r in enumerate(rows) if r["status"] not in ("Cancelled", "No-show") and r["tokenNumber"] != "Break"]
    days_used = set()
    made = 0
    for i in rng.sample(occupying, min(len(occupying), args.duplicates * 4)):
        key = (rows[i]["clinicId"], rows[i]["doctorId"], rows[i]["date"])
        if key in days_used or made == args.duplicates:
            continue
        days_used.add(key)
        twin = dict(rows[i], id=firestore_id(rng), patientName="Twin T.")
        rows.append(twin)
        made += 1
    rng.shuffle(rows)
    with open(args.out, "w") as out:
        for r in rows:
            out.write(json.dumps(r, separators=(",", ":")))
            out.write("\n")
    print(f"{len(rows)} records, {made} duplicate groups")


if __name__ == "__main__":
    main()
