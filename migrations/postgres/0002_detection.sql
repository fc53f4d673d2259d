-- Detection: the mirror of external apps' appointments, incidents, the alert outbox.
-- Timestamps are TIMESTAMPTZ; flags are 0/1 integers (as on SQLite, so both stores
-- share their SQL).

-- The mirror holds the external truth, duplicates included: no uniqueness beyond
-- the document's own id in its source. `version` (µs since the epoch, from
-- updatedAt, else createdAt) keeps the newest event when events arrive twice or
-- out of order; a delete is a tombstone versioned at its arrival.
CREATE TABLE watched_appointments (
    source        TEXT NOT NULL,
    id            TEXT NOT NULL,
    clinic_id     TEXT NOT NULL,
    doctor_id     TEXT NOT NULL,
    date          DATE NOT NULL,
    session_index BIGINT,
    slot_index    BIGINT NOT NULL,
    token_number  TEXT,
    status        TEXT NOT NULL,
    occupying     BIGINT NOT NULL,
    is_break      BIGINT NOT NULL,
    booked_via    TEXT,
    created_at    TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ,
    version       BIGINT,
    deleted       BIGINT NOT NULL DEFAULT 0,
    received_at   TIMESTAMPTZ NOT NULL,
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
    date            DATE NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('slot', 'token')),
    key             TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    found_by        TEXT NOT NULL CHECK (found_by IN ('realtime', 'audit')),
    members         TEXT NOT NULL, -- JSON array of {"source", "id"}
    member_count    BIGINT NOT NULL,
    regressions     BIGINT NOT NULL DEFAULT 0,
    first_seen      TIMESTAMPTZ NOT NULL,
    last_seen       TIMESTAMPTZ NOT NULL,
    changed_at      TIMESTAMPTZ NOT NULL,
    detection_ms    BIGINT,
    acknowledged_at TIMESTAMPTZ,
    acknowledged_by TEXT,
    resolved_at     TIMESTAMPTZ,
    resolved_by     TEXT,
    note            TEXT,
    last_notified_at TIMESTAMPTZ,
    UNIQUE (clinic_id, doctor_id, date, kind, key)
);
CREATE INDEX incidents_by_clinic ON incidents (clinic_id, state, first_seen);

-- What to tell people, written in the same transaction as the incident change.
CREATE TABLE alert_outbox (
    id              TEXT PRIMARY KEY,
    clinic_id       TEXT NOT NULL,
    incident_id     TEXT NOT NULL,
    event           TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
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
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error      TEXT,
    delivered_at    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (id, channel)
);
CREATE INDEX notifications_due ON notifications (state, next_attempt_at);

CREATE TABLE notification_attempts (
    notification_id TEXT NOT NULL,
    channel         TEXT NOT NULL,
    attempt         BIGINT NOT NULL,
    at              TIMESTAMPTZ NOT NULL,
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
    created_at TIMESTAMPTZ NOT NULL,
    ends_at    TIMESTAMPTZ NOT NULL
);

-- Who runs the detector and the dispatcher when several servers share a database.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- Watch keys: a role scoped to sources (their names go in `clinics`).
ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check
    CHECK (role IN ('admin', 'clinic', 'booking', 'watch'));
