-- Every change to an incident bumps its revision, and a change is saved only over the
-- revision it was made from: a person's resolve and the detector's save (or the
-- dispatcher's note of when it last told people) can no longer overwrite each other.
ALTER TABLE incidents ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
