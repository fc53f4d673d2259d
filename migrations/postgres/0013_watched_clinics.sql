-- Every clinic of the mirror is audited, registered or not, in the zone of the watch
-- source that names it (`store::audit::WATCHED_CLINICS`, read at every pass of the
-- audit runner and by the dashboard): an index that finds each (clinic, source) and
-- its earliest document by a few seeks each, however many documents the mirror holds.
CREATE INDEX watched_by_clinic_source ON watched_appointments (clinic_id, source, received_at);
