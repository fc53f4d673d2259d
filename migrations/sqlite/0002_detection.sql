-- Detection: the mirror of external apps' appointments, incidents, the alert outbox.
-- Timestamps are RFC 3339 UTC text; flags are 0/1 integers.

-- The mirror holds the external truth, duplicates included: no uniqueness beyond
-- the document's own id in its source. `version` (µs since the epoch, from
-- updatedAt, else createdAt) keeps the newest event when events arrive twice or
-- out of order; a delete is a tombstone versioned at its arrival.
CREATE TABLE watched_appointments (
    source        TEXT NOT NULL,
    id            TEXT NOT NULL,
    clinic_id     TEXT NOT NULL,
    doctor_id     TEXT NOT NULL,
    date          TEXT NOT NULL,
    session_index INTEGER,
    slot_index    INTEGER NOT NULL,
    token_number  TEXT,
    status        TEXT NOT NULL,
    occupying     INTEGER NOT NULL,
    is_break      INTEGER NOT NULL,
    booked_via    TEXT,
    created_at    TEXT,
    updated_at    TEXT,
    version       INTEGER,
    deleted       INTEGER NOT NULL DEFAULT 0,
    received_at   TEXT NOT NULL,
    document      TEXT NOT NULL,
    PRIMARY KEY (source, id)
);
CREATE INDEX watched_by_day ON watched_appointments (clinic_id, doctor_id, date);
CREATE INDEX watched_by_arrival ON watched_appointments (received_at);
CREATE INDEX appointments_by_change ON appointments (updated_at);

-- One incident per fingerprint (kind, clinic, doctor, date, slot or token).
CREATE TABLE incidents (
    id              TEXT PRIMARY KEY,
    clinic_id       TEXT NOT NULL,
    doctor_id       TEXT NOT NULL,
    date            TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('slot', 'token')),
    key             TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    found_by        TEXT NOT NULL CHECK (found_by IN ('realtime', 'audit')),
    members         TEXT NOT NULL, -- JSON array of {"source", "id"}
    member_count    INTEGER NOT NULL,
    regressions     INTEGER NOT NULL DEFAULT 0,
    first_seen      TEXT NOT NULL,
    last_seen       TEXT NOT NULL,
    changed_at      TEXT NOT NULL,
    detection_ms    INTEGER,
    acknowledged_at TEXT,
    acknowledged_by TEXT,
    resolved_at     TEXT,
    resolved_by     TEXT,
    note            TEXT,
    last_notified_at TEXT,
    UNIQUE (clinic_id, doctor_id, date, kind, key)
);
CREATE INDEX incidents_by_clinic ON incidents (clinic_id, state, first_seen);

-- What to tell people, written in the same transaction as the incident change.
CREATE TABLE alert_outbox (
    id              TEXT PRIMARY KEY,
    clinic_id       TEXT NOT NULL,
    incident_id     TEXT NOT NULL,
    event           TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    notification_id TEXT -- set once grouped into a notification
);
CREATE INDEX alert_outbox_ungrouped ON alert_outbox (notification_id, clinic_id, created_at);

-- One grouped message per channel, and its delivery state.
CREATE TABLE notifications (
    id              TEXT NOT NULL,
    channel         TEXT NOT NULL,
    clinic_id       TEXT NOT NULL,
    event           TEXT NOT NULL,
    payload         TEXT NOT NULL, -- the Notification as JSON
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    delivered_at    TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (id, channel)
);
CREATE INDEX notifications_due ON notifications (state, next_attempt_at);

CREATE TABLE notification_attempts (
    notification_id TEXT NOT NULL,
    channel         TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    at              TEXT NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('delivered', 'transient', 'permanent')),
    error           TEXT,
    PRIMARY KEY (notification_id, channel, attempt)
);

CREATE TABLE silences (
    id         TEXT PRIMARY KEY,
    clinic_id  TEXT, -- NULL matches every clinic
    kind       TEXT, -- NULL matches both kinds
    reason     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    ends_at    TEXT NOT NULL
);

-- Who runs the detector and the dispatcher when several servers share a database.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

-- Watch keys: a role scoped to sources. SQLite cannot alter a CHECK, so the table is
-- rebuilt.
CREATE TABLE api_keys_new (
    id          TEXT PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'clinic', 'booking', 'watch')),
    clinics     TEXT NOT NULL, -- JSON array: clinic ids, or for watch keys source names
    secret_hash TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
INSERT INTO api_keys_new SELECT id, role, clinics, secret_hash, created_at, revoked_at FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_new RENAME TO api_keys;
