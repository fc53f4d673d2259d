-- The overview and /api/v1/stats read booking outcomes of a range of days over every
-- clinic (`store::metrics::OUTCOMES`): an index that holds what they sum, in the
-- order they group by, so the read neither visits the table nor sorts.
DROP INDEX booking_rollups_by_day;
CREATE INDEX booking_rollups_by_day ON booking_rollups (day, clinic_id, hour, outcome, count, retries);
