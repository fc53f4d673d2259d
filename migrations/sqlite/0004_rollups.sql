-- Metrics: booking outcomes counted in time buckets, so the counts survive restarts
-- and several servers sharing this database add up. Each server keeps its counts in
-- memory and adds them here every few seconds (`count = count + excluded.count`), so
-- a crash loses at most that interval of counts; never an appointment.

-- One row per clinic, local day and local hour of the attempt, doctor, kind and
-- outcome. Day and hour are the clinic's own (Asia/Kolkata is UTC+5:30: a UTC hour
-- would split the 9–10 rush in two). `outcome` is `booked`, the code of the refusal
-- (`slot_taken`, `no_walk_in_slot`, …; see docs/API.md), `appointment_changed`,
-- `replayed` or `failed`. Keyed by clinic first, as on PostgreSQL.
CREATE TABLE booking_rollups (
    clinic_id      TEXT NOT NULL,
    day            TEXT NOT NULL,
    hour           INTEGER NOT NULL CHECK (hour BETWEEN 0 AND 23),
    doctor_id      TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('advance', 'walk_in')),
    outcome        TEXT NOT NULL,
    count          INTEGER NOT NULL,
    -- Transactions run again (serialization failures, deadlocks) for these attempts.
    retries        INTEGER NOT NULL,
    -- Time in the store (waiting for the lock or writer included), summed, in µs.
    latency_us_sum INTEGER NOT NULL,
    PRIMARY KEY (clinic_id, day, hour, doctor_id, kind, outcome)
);
-- Stats over every clinic select by day alone.
CREATE INDEX booking_rollups_by_day ON booking_rollups (day);

-- The same counts summed over everything but kind and outcome, added in the same
-- transaction as the rollups: what `/metrics` reads at every scrape, a handful of
-- rows however long the history.
CREATE TABLE booking_totals (
    kind    TEXT NOT NULL CHECK (kind IN ('advance', 'walk_in')),
    outcome TEXT NOT NULL,
    count   INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    PRIMARY KEY (kind, outcome)
);
