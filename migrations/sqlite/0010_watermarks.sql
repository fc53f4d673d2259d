-- How far the detector has checked: every doctor-day written before `checked_until`
-- has been checked. A server starting after an outage of any length checks every
-- doctor-day written since, not only the re-scan window's.
CREATE TABLE watermarks (
    name          TEXT PRIMARY KEY,
    checked_until TEXT NOT NULL
);
