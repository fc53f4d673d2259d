//! Which clinics slotguard knows of, and in which time zone: those registered with
//! `POST /clinics`, and those only seen in watched documents, which keep the zone
//! configured for their watch source until they are registered. The one answer the
//! nightly audit, `slotguard audit`, the stats, the weekly report and the dashboard
//! share, so no clinic is audited in one zone and shown in another.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::{BookingPolicy, Clinic, ClinicId};

/// The time zone of each watch source's clinics (`[watch.sources.NAME] timezone` in
/// slotguard.toml). A source not configured has none, and its clinics keep
/// [`Clinic::DEFAULT_TIMEZONE`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceZones(BTreeMap<String, Tz>);

impl SourceZones {
    pub fn new(zones: impl IntoIterator<Item = (String, Tz)>) -> Self {
        Self(zones.into_iter().collect())
    }

    /// The zone configured for `source`, if any.
    pub fn configured(&self, source: &str) -> Option<Tz> {
        self.0.get(source).copied()
    }
}

/// A clinic as one watch source's documents name it, and when the earliest of those
/// documents still in the mirror arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedClinic {
    pub clinic_id: ClinicId,
    pub source: String,
    pub first_seen: DateTime<Utc>,
}

/// A clinic the audit, the stats and the reports count.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownClinic {
    /// As registered; for a clinic only seen in watched documents, its id as name,
    /// its source's zone, the default booking policy and `auditAt`.
    pub clinic: Clinic,
    pub registered: bool,
    /// When slotguard first knew of it: registered, or its first watched document
    /// received, whichever came first. Nothing before is audited, alarmed or reported.
    pub since: DateTime<Utc>,
}

/// An unregistered clinic named by watch sources configured with different zones:
/// the first source by name decides.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneConflict {
    pub clinic_id: ClinicId,
    /// The deciding source and its zone.
    pub chosen: (String, Tz),
    /// The other configured sources naming the clinic with another zone.
    pub overruled: Vec<(String, Tz)>,
}

/// Every clinic slotguard knows of, by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KnownClinics {
    clinics: BTreeMap<ClinicId, KnownClinic>,
    /// Zones that disagreed, for the caller to log.
    pub conflicts: Vec<ZoneConflict>,
}

impl KnownClinics {
    /// Registered clinics (with when they were created) and the clinics of the
    /// mirror, each clinic once. A registered clinic keeps its own zone whatever its
    /// documents' sources say. An unregistered one takes the zone of its sources that
    /// have one configured (the first by name when they disagree), else the default.
    pub fn resolve(
        registered: impl IntoIterator<Item = (Clinic, DateTime<Utc>)>,
        watched: &[WatchedClinic],
        zones: &SourceZones,
    ) -> Self {
        let mut seen: BTreeMap<&ClinicId, Vec<&WatchedClinic>> = BTreeMap::new();
        for w in watched {
            seen.entry(&w.clinic_id).or_default().push(w);
        }
        let first_seen = |id: &ClinicId| {
            seen.get(id)
                .and_then(|ws| ws.iter().map(|w| w.first_seen).min())
        };
        let mut clinics: BTreeMap<ClinicId, KnownClinic> = registered
            .into_iter()
            .map(|(clinic, created)| {
                let since = first_seen(&clinic.id).map_or(created, |at| at.min(created));
                let known = KnownClinic {
                    clinic,
                    registered: true,
                    since,
                };
                (known.clinic.id.clone(), known)
            })
            .collect();
        let mut conflicts = Vec::new();
        for (id, sources) in &seen {
            if clinics.contains_key(*id) {
                continue;
            }
            let mut configured: Vec<(String, Tz)> = sources
                .iter()
                .filter_map(|w| zones.configured(&w.source).map(|tz| (w.source.clone(), tz)))
                .collect();
            configured.sort_by(|a, b| a.0.cmp(&b.0));
            configured.dedup_by(|a, b| a.0 == b.0);
            let timezone = configured
                .first()
                .map_or(Clinic::DEFAULT_TIMEZONE, |(_, tz)| *tz);
            let overruled: Vec<(String, Tz)> = configured
                .iter()
                .filter(|(_, tz)| *tz != timezone)
                .cloned()
                .collect();
            if let (Some(chosen), false) = (configured.first(), overruled.is_empty()) {
                conflicts.push(ZoneConflict {
                    clinic_id: (*id).clone(),
                    chosen: chosen.clone(),
                    overruled,
                });
            }
            let since = first_seen(id).unwrap_or_default();
            clinics.insert(
                (*id).clone(),
                KnownClinic {
                    clinic: Clinic {
                        id: (*id).clone(),
                        name: id.to_string(),
                        timezone,
                        policy: BookingPolicy::default(),
                        audit_at: Clinic::DEFAULT_AUDIT_AT,
                    },
                    registered: false,
                    since,
                },
            );
        }
        Self { clinics, conflicts }
    }

    pub fn get(&self, id: &ClinicId) -> Option<&KnownClinic> {
        self.clinics.get(id)
    }

    /// Every known clinic, by id.
    pub fn iter(&self) -> impl Iterator<Item = &KnownClinic> {
        self.clinics.values()
    }

    pub fn into_vec(self) -> Vec<KnownClinic> {
        self.clinics.into_values().collect()
    }

    /// When the first of them became known: the first week any report may cover.
    pub fn first_since(&self) -> Option<DateTime<Utc>> {
        self.iter().map(|k| k.since).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveTime;
    use chrono_tz::{America, Asia, Europe};

    fn id(raw: &str) -> ClinicId {
        ClinicId::parse("id", raw).unwrap()
    }

    fn at(raw: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(raw).unwrap().to_utc()
    }

    fn watched(clinic: &str, source: &str, first_seen: &str) -> WatchedClinic {
        WatchedClinic {
            clinic_id: id(clinic),
            source: source.into(),
            first_seen: at(first_seen),
        }
    }

    fn zones(pairs: &[(&str, Tz)]) -> SourceZones {
        SourceZones::new(pairs.iter().map(|(s, tz)| (s.to_string(), *tz)))
    }

    fn registered(raw: &str, tz: Tz, created: &str) -> (Clinic, DateTime<Utc>) {
        (
            Clinic {
                id: id(raw),
                name: format!("Clinic {raw}"),
                timezone: tz,
                policy: BookingPolicy::default(),
                audit_at: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
            },
            at(created),
        )
    }

    #[test]
    fn a_clinic_seen_only_in_watched_documents_takes_its_sources_zone() {
        let known = KnownClinics::resolve(
            [],
            &[watched("aluva", "kloqo", "2026-12-01T00:30:00Z")],
            &zones(&[("kloqo", Asia::Tokyo)]),
        );
        let aluva = known.get(&id("aluva")).unwrap();
        assert!(!aluva.registered);
        assert_eq!(aluva.clinic.timezone, Asia::Tokyo);
        assert_eq!(aluva.clinic.name, "aluva");
        assert_eq!(aluva.clinic.audit_at, Clinic::DEFAULT_AUDIT_AT);
        assert_eq!(aluva.since, at("2026-12-01T00:30:00Z"));
        assert!(known.conflicts.is_empty());
    }

    #[test]
    fn a_source_without_a_configured_zone_gives_the_default() {
        let known = KnownClinics::resolve(
            [],
            &[watched("aluva", "other", "2026-12-01T00:30:00Z")],
            &zones(&[("kloqo", Asia::Tokyo)]),
        );
        assert_eq!(
            known.get(&id("aluva")).unwrap().clinic.timezone,
            Clinic::DEFAULT_TIMEZONE
        );
    }

    #[test]
    fn a_registered_clinics_own_zone_wins_over_its_sources() {
        let known = KnownClinics::resolve(
            [registered("kochi", Europe::London, "2026-11-01T00:00:00Z")],
            &[
                watched("kochi", "kloqo", "2026-10-01T00:00:00Z"),
                watched("kochi", "zeta", "2026-12-01T00:00:00Z"),
            ],
            &zones(&[("kloqo", Asia::Tokyo), ("zeta", America::New_York)]),
        );
        let kochi = known.get(&id("kochi")).unwrap();
        assert!(kochi.registered);
        assert_eq!(kochi.clinic.timezone, Europe::London);
        assert_eq!(kochi.clinic.name, "Clinic kochi");
        assert_eq!(
            kochi.since,
            at("2026-10-01T00:00:00Z"),
            "known since its first document, before it was registered"
        );
        assert!(known.conflicts.is_empty(), "nothing to choose");
        assert_eq!(known.iter().count(), 1, "one clinic, however many sources");
    }

    #[test]
    fn sources_that_disagree_are_settled_by_the_first_configured_source_by_name() {
        let sources = [
            watched("aluva", "zeta", "2026-12-02T00:00:00Z"),
            watched("aluva", "unconfigured", "2026-12-03T00:00:00Z"),
            watched("aluva", "kloqo", "2026-12-01T00:00:00Z"),
        ];
        let zones = zones(&[("kloqo", Asia::Tokyo), ("zeta", America::New_York)]);
        let known = KnownClinics::resolve([], &sources, &zones);
        let aluva = known.get(&id("aluva")).unwrap();
        assert_eq!(aluva.clinic.timezone, Asia::Tokyo);
        assert_eq!(aluva.since, at("2026-12-01T00:00:00Z"));
        assert_eq!(
            known.conflicts,
            [ZoneConflict {
                clinic_id: id("aluva"),
                chosen: ("kloqo".into(), Asia::Tokyo),
                overruled: vec![("zeta".into(), America::New_York)],
            }]
        );
        let mut reversed = sources.to_vec();
        reversed.reverse();
        assert_eq!(
            KnownClinics::resolve([], &reversed, &zones),
            known,
            "the order rows come in never decides"
        );
    }

    #[test]
    fn sources_configured_with_the_same_zone_agree() {
        let known = KnownClinics::resolve(
            [],
            &[
                watched("aluva", "a", "2026-12-01T00:00:00Z"),
                watched("aluva", "b", "2026-12-01T00:00:00Z"),
            ],
            &zones(&[("a", Asia::Tokyo), ("b", Asia::Tokyo)]),
        );
        assert!(known.conflicts.is_empty());
        assert_eq!(
            known.get(&id("aluva")).unwrap().clinic.timezone,
            Asia::Tokyo
        );
    }

    #[test]
    fn a_clinic_neither_registered_nor_watched_is_unknown() {
        let known = KnownClinics::resolve(
            [registered("kochi", Asia::Kolkata, "2026-11-01T00:00:00Z")],
            &[watched("aluva", "kloqo", "2026-12-01T00:00:00Z")],
            &SourceZones::default(),
        );
        assert!(known.get(&id("nowhere")).is_none());
        let ids: Vec<&str> = known.iter().map(|k| k.clinic.id.as_str()).collect();
        assert_eq!(ids, ["aluva", "kochi"]);
        assert_eq!(known.first_since(), Some(at("2026-11-01T00:00:00Z")));
    }
}
