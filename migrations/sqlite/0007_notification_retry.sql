-- Dead letters can be retried on demand (the API, `slotguard alerts retry`, the
-- dashboard). A retried delivery keeps its attempts, and its history in
-- notification_attempts, and gets a new round of retries counted from `retry_from`.
ALTER TABLE notifications ADD COLUMN retry_from INTEGER NOT NULL DEFAULT 0;
ALTER TABLE notifications ADD COLUMN retried_at TEXT;
ALTER TABLE notifications ADD COLUMN retried_by TEXT;
