-- The booking core on PostgreSQL. Every key that must be unique starts with
-- clinic_id, so the tables distribute by clinic on Citus unchanged.

CREATE TABLE clinics (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    timezone           TEXT NOT NULL,
    walk_in_reserve_bp BIGINT NOT NULL CHECK (walk_in_reserve_bp BETWEEN 0 AND 10000),
    min_lead_minutes   BIGINT NOT NULL CHECK (min_lead_minutes >= 0),
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);

CREATE TABLE doctors (
    clinic_id      TEXT NOT NULL REFERENCES clinics (id),
    id             TEXT NOT NULL,
    name           TEXT NOT NULL,
    slot_minutes   BIGINT NOT NULL CHECK (slot_minutes > 0),
    availability   TEXT NOT NULL, -- JSON, as the API takes it
    date_overrides TEXT NOT NULL, -- JSON, as the API takes it
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (clinic_id, id)
);

CREATE TABLE appointments (
    id                      TEXT NOT NULL,
    clinic_id               TEXT NOT NULL,
    doctor_id               TEXT NOT NULL,
    date                    DATE NOT NULL,
    session_index           BIGINT NOT NULL CHECK (session_index >= 0),
    slot_index              BIGINT NOT NULL CHECK (slot_index >= 0),
    time                    TEXT NOT NULL,
    kind                    TEXT NOT NULL CHECK (kind IN ('advance', 'walk_in')),
    numeric_token           BIGINT NOT NULL,
    token_number            TEXT NOT NULL,
    status                  TEXT NOT NULL CHECK (status IN ('Pending', 'Confirmed', 'Skipped',
                                'InConsultation', 'Completed', 'Cancelled', 'No-show')),
    patient_name            TEXT NOT NULL,
    patient_phone           TEXT,
    booked_via              TEXT NOT NULL,
    created_at              TIMESTAMPTZ NOT NULL,
    updated_at              TIMESTAMPTZ NOT NULL,
    previous_appointment_id TEXT,
    PRIMARY KEY (clinic_id, id),
    FOREIGN KEY (clinic_id, doctor_id) REFERENCES doctors (clinic_id, id)
);

-- Ids are random UUIDs; this index serves GET /appointments/{id}. It cannot be
-- UNIQUE without clinic_id on Citus, and need not be.
CREATE INDEX appointments_by_id ON appointments (id);

-- Invariant 1 of SPEC.md: at most one occupying appointment per
-- (clinic, doctor, date, slotIndex). "Occupying" = every status but Cancelled and
-- No-show, the same set as domain::Status::is_occupying.
CREATE UNIQUE INDEX appointments_one_occupant_per_slot
    ON appointments (clinic_id, doctor_id, date, slot_index)
    WHERE status NOT IN ('Cancelled', 'No-show');

-- Invariant 2 of SPEC.md: at most one occupying appointment per
-- (clinic, doctor, date, tokenNumber).
CREATE UNIQUE INDEX appointments_one_holder_per_token
    ON appointments (clinic_id, doctor_id, date, token_number)
    WHERE status NOT IN ('Cancelled', 'No-show');

CREATE INDEX appointments_by_day ON appointments (clinic_id, doctor_id, date, slot_index);

-- One row per doctor-day, locked (upserted) first by every booking of that day, so
-- that reading the free slots and inserting the chosen one is serial per doctor-day
-- under READ COMMITTED. The unique indexes above stay the guard; this lock only
-- keeps racing bookings from failing on them and retrying.
CREATE TABLE booking_days (
    clinic_id TEXT NOT NULL,
    doctor_id TEXT NOT NULL,
    date      DATE NOT NULL,
    bookings  BIGINT NOT NULL,
    PRIMARY KEY (clinic_id, doctor_id, date)
);

-- Walk-in numbers: one row per session-day, incremented in the walk-in's own
-- transaction, so a number is issued once and a failed walk-in consumes none.
CREATE TABLE walk_in_counters (
    clinic_id     TEXT NOT NULL,
    doctor_id     TEXT NOT NULL,
    date          DATE NOT NULL,
    session_index BIGINT NOT NULL,
    last_number   BIGINT NOT NULL,
    PRIMARY KEY (clinic_id, doctor_id, date, session_index)
);

-- Invariant 5: a key with its request's hash and the response it got, written in
-- the booking's transaction. Keys are per API key (key_hash covers both).
CREATE TABLE idempotency_keys (
    clinic_id       TEXT NOT NULL,
    key_hash        TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    response_status BIGINT NOT NULL,
    response_body   TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (clinic_id, key_hash)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'clinic', 'booking')),
    clinics     TEXT NOT NULL, -- JSON array of clinic ids; empty = every clinic
    secret_hash TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);
