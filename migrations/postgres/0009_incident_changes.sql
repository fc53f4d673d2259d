-- The live pages look, once a second, for incidents opened, changed, acknowledged or
-- resolved lately by any process: an index on each of those instants, so the look
-- reads the few rows touched instead of every incident.
CREATE INDEX incidents_by_change ON incidents (changed_at);
CREATE INDEX incidents_by_acknowledged ON incidents (acknowledged_at);
CREATE INDEX incidents_by_resolved ON incidents (resolved_at);
