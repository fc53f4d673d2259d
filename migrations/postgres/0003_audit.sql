-- Audit: when each clinic's nightly audit runs, every run with its three counts, and
-- the weekly reports as they were sent.

-- `auditAt`, the clinic's local wall-clock time of its nightly audit (HH:MM).
ALTER TABLE clinics ADD COLUMN audit_at TEXT NOT NULL DEFAULT '23:00';

-- One row per audit run. `scheduled` runs (the nightly one and its catch-ups) are
-- claimed by inserting their row: the partial unique index lets exactly one runner
-- hold a clinic's local date, however many `serve` processes share the database.
-- On-demand runs (`slotguard audit`, scheduled = 0) may repeat.
CREATE TABLE audit_runs (
    id                   TEXT PRIMARY KEY,
    clinic_id            TEXT NOT NULL,
    local_date           DATE NOT NULL,
    scheduled            BIGINT NOT NULL CHECK (scheduled IN (0, 1)),
    trigger              TEXT NOT NULL CHECK (trigger IN ('nightly', 'catch_up', 'on_demand')),
    runner               TEXT NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at           TIMESTAMPTZ NOT NULL,
    finished_at          TIMESTAMPTZ,
    appointments_checked BIGINT NOT NULL DEFAULT 0,
    duplicate_groups     BIGINT NOT NULL DEFAULT 0,
    extra_rows           BIGINT NOT NULL DEFAULT 0,
    affected_rows        BIGINT NOT NULL DEFAULT 0,
    -- Incidents this run opened (the real-time detector had missed them) and resolved.
    incidents_opened     BIGINT NOT NULL DEFAULT 0,
    incidents_resolved   BIGINT NOT NULL DEFAULT 0,
    error                TEXT
);
CREATE UNIQUE INDEX audit_runs_one_scheduled ON audit_runs (clinic_id, local_date) WHERE scheduled = 1;
CREATE INDEX audit_runs_by_clinic ON audit_runs (clinic_id, local_date);

-- The audit reads a clinic's whole local day at once.
CREATE INDEX appointments_by_clinic_day ON appointments (clinic_id, date);
CREATE INDEX watched_by_clinic_day ON watched_appointments (clinic_id, date);

-- A weekly report as generated (JSON), so past weeks read the same again. `clinic_id`
-- is '*' for the all-clinics report.
CREATE TABLE weekly_reports (
    clinic_id    TEXT NOT NULL,
    week         TEXT NOT NULL, -- ISO week, e.g. 2026-W47
    generated_at TIMESTAMPTZ NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (clinic_id, week)
);
