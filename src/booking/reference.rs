//! Clinics and doctors as bookings read them, kept for a moment: every booking needs
//! both, they change rarely, and reading them costs two statements per booking.
//! An edit through this server replaces the entry at once; one made through another
//! server sharing the database is seen within [`KEEP_FOR`]. The invariants do not
//! rest on this: the database's constraints hold whatever a server read.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::{Clinic, ClinicId, Doctor, DoctorId};

/// How long a clinic or doctor read from the database is used without reading it
/// again.
pub const KEEP_FOR: Duration = Duration::from_secs(1);
/// Past this many entries the cache starts afresh, so it never grows without bound.
const MOST_ENTRIES: usize = 10_000;

/// Recently read values by key. A std `Mutex`: held for a lookup or an insert,
/// never across an await.
struct Recent<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> Recent<K, V> {
    fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(read_at, _)| read_at.elapsed() < KEEP_FOR)
            .map(|(_, value)| value.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MOST_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), value));
    }
}

/// The clinics and doctors this server read in the last [`KEEP_FOR`].
pub struct Reference {
    clinics: Recent<ClinicId, Clinic>,
    doctors: Recent<(ClinicId, DoctorId), Doctor>,
}

impl Default for Reference {
    fn default() -> Self {
        Self {
            clinics: Recent::new(),
            doctors: Recent::new(),
        }
    }
}

impl Reference {
    pub fn clinic(&self, id: &ClinicId) -> Option<Clinic> {
        self.clinics.get(id)
    }

    pub fn doctor(&self, clinic: &ClinicId, id: &DoctorId) -> Option<Doctor> {
        self.doctors.get(&(clinic.clone(), id.clone()))
    }

    /// As just read from, or written to, the database.
    pub fn keep_clinic(&self, clinic: &Clinic) {
        self.clinics.put(clinic.id.clone(), clinic.clone());
    }

    pub fn keep_doctor(&self, doctor: &Doctor) {
        self.doctors.put(
            (doctor.clinic_id.clone(), doctor.id.clone()),
            doctor.clone(),
        );
    }
}
