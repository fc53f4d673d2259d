-- One advance booking, the SQL slotguard runs on PostgreSQL for it (src/store/postgres.rs
-- LOCK_DOCTOR_DAY, then src/store/codec.rs OCCUPIED_SLOTS and INSERT_APPOINTMENT), as a
-- pgbench custom script. Run by bench/run.sh:
--   pgbench -n -M prepared -f bench/pg_booking.sql -D hot=0|1 -D notify=0|1 -c N -j 2 -T S DB
-- Schema: `slotguard migrate`, plus clinics bench-0..9 with doctors dr-0..4 (bench/run.sh).
--
-- hot=0 ("spread"): a random doctor-day of 10 clinics x 5 doctors x 14 days, the keys
--   `slotguard loadtest --scenario spread` uses. The slot is random in [0, 8e8), not
--   [0, 800) as the load tester's: pgbench cannot act on the SELECT's answer, and a
--   unique violation would abort the client, so the slot range is made so large that
--   no two bookings collide. The rows per doctor-day (what OCCUPIED_SLOTS reads) are
--   the same as slotguard's.
-- hot=1: every booking takes the one booking_days row of bench-0/dr-0, so bookings are
--   serial exactly like slotguard's bookings of one doctor-day. The slot is the
--   counter the upsert returns ("earliest free slot", what slotguard's planner picks
--   when no slotIndex is given), and after 1435 bookings (a full day of 1-minute
--   slots, all a slotguard doctor-day holds) the appointments move to the next date,
--   so OCCUPIED_SLOTS reads 0..1434 rows as on slotguard. The lock row stays the same.
-- notify=1 adds a pg_notify in the transaction, as slotguard's detection hook does on
-- PostgreSQL (a diagnostic: what the NOTIFY alone costs).
\set c random(0, 9)
\set d random(0, 4)
\set day random(0, 13)
\set slot random(0, 799999999)
\if :hot
BEGIN;
INSERT INTO booking_days (clinic_id, doctor_id, date, bookings) VALUES ('bench-0', 'dr-0', DATE '2032-01-01', 1) ON CONFLICT (clinic_id, doctor_id, date) DO UPDATE SET bookings = booking_days.bookings + 1 RETURNING bookings \gset
\set c 0
\set d 0
\set day (:bookings - 1) / 1435
\set slot (:bookings - 1) % 1435
\else
BEGIN;
INSERT INTO booking_days (clinic_id, doctor_id, date, bookings) VALUES ('bench-' || :c::text, 'dr-' || :d::text, DATE '2031-01-01' + :day::int, 1) ON CONFLICT (clinic_id, doctor_id, date) DO UPDATE SET bookings = booking_days.bookings + 1;
\endif
SELECT slot_index FROM appointments WHERE clinic_id = 'bench-' || :c::text AND doctor_id = 'dr-' || :d::text AND date = DATE '2031-01-01' + :day::int + 365 * :hot::int AND status NOT IN ('Cancelled', 'No-show');
INSERT INTO appointments (id, clinic_id, doctor_id, date, session_index, slot_index, time, kind, numeric_token, token_number, status, patient_name, patient_phone, booked_via, created_at, updated_at, previous_appointment_id) VALUES (gen_random_uuid()::text, 'bench-' || :c::text, 'dr-' || :d::text, DATE '2031-01-01' + :day::int + 365 * :hot::int, :slot::bigint / 1000, :slot::bigint, '09:00', 'advance', :slot::bigint + 1, 'A' || (:slot::bigint / 1000 + 1)::text || '-' || CASE WHEN :slot::bigint < 99 THEN lpad((:slot::bigint + 1)::text, 3, '0') ELSE (:slot::bigint + 1)::text END, 'Pending', 'pgbench patient', NULL, 'pgbench', now(), now(), NULL);
\if :notify
SELECT pg_notify('slotguard_bench', 'booked');
\endif
COMMIT;
