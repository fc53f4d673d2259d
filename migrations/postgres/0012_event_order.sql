-- Two events of one watched document are put in order by the source's own write
-- time (`update_time`: Firestore's updateTime, sent by the forwarder), else the
-- document's updatedAt, else its createdAt (`version`, as before); for the same
-- version by the stage of the day its status is at (`stage`: 0 waiting, 1 called,
-- 2 in consultation, 3 done; `domain::Status::stage`), then by the SHA-256 of its
-- text (`fingerprint`), so the order they arrive in never decides.
ALTER TABLE watched_appointments ADD COLUMN update_time TIMESTAMPTZ;
ALTER TABLE watched_appointments ADD COLUMN stage BIGINT NOT NULL DEFAULT 0;
ALTER TABLE watched_appointments ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
UPDATE watched_appointments SET stage = CASE status
    WHEN 'Confirmed' THEN 1 WHEN 'Skipped' THEN 1
    WHEN 'InConsultation' THEN 2
    WHEN 'Completed' THEN 3 WHEN 'Cancelled' THEN 3 WHEN 'No-show' THEN 3
    ELSE 0 END;
