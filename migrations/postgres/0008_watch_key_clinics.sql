-- A watch key may be held to clinics as well as to sources: a forwarder for one
-- clinic's app cannot open incidents (and send alerts) about another clinic.
-- JSON array of clinic ids; empty = every clinic. (For watch keys `clinics` lists
-- their sources, as before.)
ALTER TABLE api_keys ADD COLUMN watch_clinics TEXT NOT NULL DEFAULT '[]';
