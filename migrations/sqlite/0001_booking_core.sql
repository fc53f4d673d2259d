-- The booking core on SQLite. Times are RFC 3339 UTC text, dates YYYY-MM-DD text.

CREATE TABLE clinics (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    timezone           TEXT NOT NULL,
    walk_in_reserve_bp INTEGER NOT NULL CHECK (walk_in_reserve_bp BETWEEN 0 AND 10000),
    min_lead_minutes   INTEGER NOT NULL CHECK (min_lead_minutes >= 0),
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);

CREATE TABLE doctors (
    clinic_id      TEXT NOT NULL REFERENCES clinics (id),
    id             TEXT NOT NULL,
    name           TEXT NOT NULL,
    slot_minutes   INTEGER NOT NULL CHECK (slot_minutes > 0),
    availability   TEXT NOT NULL, -- JSON, as the API takes it
    date_overrides TEXT NOT NULL, -- JSON, as the API takes it
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (clinic_id, id)
);

CREATE TABLE appointments (
    id                      TEXT NOT NULL UNIQUE,
    clinic_id               TEXT NOT NULL,
    doctor_id               TEXT NOT NULL,
    date                    TEXT NOT NULL,
    session_index           INTEGER NOT NULL CHECK (session_index >= 0),
    slot_index              INTEGER NOT NULL CHECK (slot_index >= 0),
    time                    TEXT NOT NULL,
    kind                    TEXT NOT NULL CHECK (kind IN ('advance', 'walk_in')),
    numeric_token           INTEGER NOT NULL,
    token_number            TEXT NOT NULL,
    status                  TEXT NOT NULL CHECK (status IN ('Pending', 'Confirmed', 'Skipped',
                                'InConsultation', 'Completed', 'Cancelled', 'No-show')),
    patient_name            TEXT NOT NULL,
    patient_phone           TEXT,
    booked_via              TEXT NOT NULL,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL,
    previous_appointment_id TEXT,
    PRIMARY KEY (clinic_id, id),
    FOREIGN KEY (clinic_id, doctor_id) REFERENCES doctors (clinic_id, id)
);

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

-- Listing a day, cancelled appointments included.
CREATE INDEX appointments_by_day ON appointments (clinic_id, doctor_id, date, slot_index);

-- Walk-in numbers: one row per session-day, incremented in the walk-in's own
-- transaction, so a number is issued once and a failed walk-in consumes none.
CREATE TABLE walk_in_counters (
    clinic_id     TEXT NOT NULL,
    doctor_id     TEXT NOT NULL,
    date          TEXT NOT NULL,
    session_index INTEGER NOT NULL,
    last_number   INTEGER NOT NULL,
    PRIMARY KEY (clinic_id, doctor_id, date, session_index)
);

-- Invariant 5: a key with its request's hash and the response it got, written in
-- the booking's transaction. Keys are per API key (key_hash covers both).
CREATE TABLE idempotency_keys (
    clinic_id       TEXT NOT NULL,
    key_hash        TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    response_status INTEGER NOT NULL,
    response_body   TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (clinic_id, key_hash)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'clinic', 'booking')),
    clinics     TEXT NOT NULL, -- JSON array of clinic ids; empty = every clinic
    secret_hash TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
