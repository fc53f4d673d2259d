-- The watched mirror's (clinic, date) index also holds the doctor, so a doctor-day's
-- lookup matches all its columns in either index: before the mirror's statistics
-- caught up with a burst, PostgreSQL looked doctor-days up through the (clinic, date)
-- index and read every doctor's rows of the day (0.85 ms a day instead of 0.02 ms).
DROP INDEX watched_by_clinic_day;
CREATE INDEX watched_by_clinic_day ON watched_appointments (clinic_id, date, doctor_id);
