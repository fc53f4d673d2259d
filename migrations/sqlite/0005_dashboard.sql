-- The dashboard: staff who log in with an email and a password, and their sessions.
-- API keys stay for programs; people get accounts.

-- A staff account. `email` is stored lower-cased and is unique. `clinics` is a JSON
-- array of clinic ids: a `clinic` user acts in those clinics (at least one), a
-- `viewer` reads them (none listed = every clinic), an `admin` has every clinic.
CREATE TABLE staff_users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'clinic', 'viewer')),
    clinics       TEXT NOT NULL,
    password_hash TEXT NOT NULL, -- argon2id, PHC string
    created_at    TEXT NOT NULL,
    disabled_at   TEXT,
    CHECK (role <> 'clinic' OR clinics <> '[]'),
    CHECK (role <> 'admin' OR clinics = '[]')
);

-- A logged-in browser. Only a SHA-256 of the cookie's secret is stored, so a copy of
-- this table logs nobody in. A session ends at logout, after `idle` without a
-- request, or at its absolute expiry, whichever comes first (docs/DASHBOARD.md).
CREATE TABLE staff_sessions (
    id_hash      TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES staff_users (id),
    csrf_token   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    ended_at     TEXT
);
CREATE INDEX staff_sessions_by_user ON staff_sessions (user_id);

-- The dashboard's incident list filters by doctor-day and pages by first seen.
CREATE INDEX incidents_by_first_seen ON incidents (first_seen, id);
CREATE INDEX incidents_by_day ON incidents (clinic_id, date);
