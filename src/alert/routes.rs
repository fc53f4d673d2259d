//! Routes: which notifications of which clinics go to which channels, like
//! Alertmanager's route tree but flat. Each `[[alerts.routes]]` matches on clinic,
//! incident kind and event and names channels; routes are tried in order and the
//! first that matches decides, unless it says `continue = true`, when the next ones
//! are tried too and add their channels.
//!
//! A channel no route names gets every notification it wants, as if there were no
//! routes: with none configured, everything goes everywhere (the behaviour before
//! routes). A channel some route names gets only what its routes send it, so each
//! clinic's SMS can go to that clinic's own admin while the ops webhook hears of all.
//!
//! Routes are checked at start, every mistake named with its line in slotguard.toml.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{IncidentAlert, Notification};
use crate::domain::{ClinicId, DuplicateKind, Event};

/// One `[[alerts.routes]]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Clinic ids; none means every clinic.
    #[serde(default)]
    pub clinics: Vec<String>,
    /// `slot`, `token`; none means both (and notices, which have no kind).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Event names (`opened`, `grew`, `regressed`, `resolved`, `reminder`,
    /// `daily_summary`, `audit_missing`, `weekly_report`); none means every event.
    #[serde(default)]
    pub events: Vec<String>,
    /// Names of `[[alerts.channels]]`.
    pub channels: Vec<String>,
    /// Also try the routes after this one when it matches.
    #[serde(default, rename = "continue")]
    pub and_continue: bool,
}

/// A route, checked.
#[derive(Debug, Clone, PartialEq)]
struct Route {
    clinics: BTreeSet<String>,
    kinds: BTreeSet<DuplicateKind>,
    events: BTreeSet<Event>,
    channels: Vec<String>,
    and_continue: bool,
}

impl Route {
    fn matches(&self, n: &Notification, incidents: &[IncidentAlert]) -> bool {
        if !self.clinics.is_empty() && !self.clinics.contains(&n.clinic_id) {
            return false;
        }
        if self.kinds.is_empty() && self.events.is_empty() {
            return true;
        }
        if incidents.is_empty() {
            // A notice (audit summary, weekly report) has an event and no kind.
            return self.kinds.is_empty() && self.events.contains(&n.event);
        }
        // A grouped message matches when one of its incidents does, by what happened
        // to it or by what is true of it now.
        incidents.iter().any(|i| {
            (self.kinds.is_empty() || self.kinds.contains(&i.kind))
                && (self.events.is_empty()
                    || self.events.contains(&i.event)
                    || self.events.contains(&i.current()))
        })
    }
}

/// The routes of a configuration, checked against its channels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routes {
    routes: Vec<Route>,
    /// Channels some route names: they get only what a route sends them.
    routed: BTreeSet<String>,
}

impl Routes {
    /// No routes: every channel gets every notification it wants.
    pub fn none() -> Self {
        Self::default()
    }

    /// Checks `configs` against the names of the configured channels; every problem
    /// is one line naming where it is (`slotguard.toml line 31: alerts.routes[1]…`).
    pub fn build(
        configs: &[RouteConfig],
        channel_names: &[&str],
        lines: &ConfigLines,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut routes = Vec::new();
        for (index, config) in configs.iter().enumerate() {
            let mut problem = |field: &str, what: String| {
                problems.push(format!(
                    "{}alerts.routes[{index}].{field}: {what}",
                    lines.route(index, field)
                ));
            };
            let mut clinics = BTreeSet::new();
            for raw in &config.clinics {
                match ClinicId::parse("clinics", raw) {
                    Ok(id) => {
                        clinics.insert(id.as_str().to_owned());
                    }
                    Err(e) => problem("clinics", format!("\"{raw}\" {}", e.message)),
                }
            }
            let mut kinds = BTreeSet::new();
            for raw in &config.kinds {
                match DuplicateKind::parse(raw) {
                    Some(kind) => {
                        kinds.insert(kind);
                    }
                    None => problem(
                        "kinds",
                        format!("\"{raw}\" is not a kind; use \"slot\" or \"token\""),
                    ),
                }
            }
            let mut events = BTreeSet::new();
            for raw in &config.events {
                match Event::parse(raw) {
                    Some(event) => {
                        events.insert(event);
                    }
                    None => problem(
                        "events",
                        format!(
                            "\"{raw}\" is not an event; the events are {}",
                            Event::ALL.map(Event::as_str).join(", ")
                        ),
                    ),
                }
            }
            if config.channels.is_empty() {
                problem(
                    "channels",
                    "must name at least one channel (a name of [[alerts.channels]])".to_owned(),
                );
            }
            for name in &config.channels {
                if !channel_names.contains(&name.as_str()) {
                    problem(
                        "channels",
                        format!(
                            "no channel is named \"{name}\"; the channels are {}",
                            if channel_names.is_empty() {
                                "none (add [[alerts.channels]] tables)".to_owned()
                            } else {
                                channel_names.join(", ")
                            }
                        ),
                    );
                }
            }
            routes.push(Route {
                clinics,
                kinds,
                events,
                channels: config.channels.clone(),
                and_continue: config.and_continue,
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let routed = routes
            .iter()
            .flat_map(|r| r.channels.iter().cloned())
            .collect();
        Ok(Self { routes, routed })
    }

    /// The channels routes send `n` to: every matching route up to and including the
    /// first that does not `continue`.
    fn chosen(&self, n: &Notification) -> BTreeSet<&str> {
        let incidents = n.incident_alerts();
        let mut chosen = BTreeSet::new();
        for route in &self.routes {
            if route.matches(n, &incidents) {
                chosen.extend(route.channels.iter().map(String::as_str));
                if !route.and_continue {
                    break;
                }
            }
        }
        chosen
    }

    /// Which of `channels` get `n` by the routes (each channel still decides whether
    /// it wants the event: SMS only what is urgent).
    pub fn select<'c>(&self, n: &Notification, channels: &[&'c str]) -> Vec<&'c str> {
        let chosen = self.chosen(n);
        channels
            .iter()
            .copied()
            .filter(|c| !self.routed.contains(*c) || chosen.contains(c))
            .collect()
    }
}

/// Where the tables of the `[alerts]` configuration start in slotguard.toml, so a
/// mistake found after parsing can still name its line. Empty for a configuration
/// that was not read from a file (tests, defaults).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigLines {
    file: String,
    channels: Vec<usize>,
    routes: Vec<(usize, BTreeMap<String, usize>)>,
}

#[derive(Deserialize)]
struct Shadow {
    #[serde(default)]
    alerts: ShadowAlerts,
}

type SpannedTable = toml::Spanned<BTreeMap<String, toml::Spanned<toml::Value>>>;

#[derive(Deserialize, Default)]
struct ShadowAlerts {
    #[serde(default)]
    channels: Vec<SpannedTable>,
    #[serde(default)]
    routes: Vec<SpannedTable>,
}

impl ConfigLines {
    /// The lines of `text`, the file named `file`; none when it does not parse (the
    /// parse error names its own line).
    pub fn read(file: &str, text: &str) -> Self {
        let Ok(shadow) = toml::from_str::<Shadow>(text) else {
            return Self::default();
        };
        let line = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        Self {
            file: file.to_owned(),
            channels: shadow
                .alerts
                .channels
                .iter()
                .map(|t| line(t.span().start))
                .collect(),
            routes: shadow
                .alerts
                .routes
                .iter()
                .map(|t| {
                    let fields = t
                        .get_ref()
                        .iter()
                        .map(|(k, v)| (k.clone(), line(v.span().start)))
                        .collect();
                    (line(t.span().start), fields)
                })
                .collect(),
        }
    }

    /// `"slotguard.toml line 12: "` for channel `index`, or nothing.
    pub fn channel(&self, index: usize) -> String {
        match self.channels.get(index) {
            Some(line) => format!("{} line {line}: ", self.file),
            None => String::new(),
        }
    }

    /// The line of `field` in route `index` (of the route's header when the field is
    /// not written there), or nothing.
    pub fn route(&self, index: usize, field: &str) -> String {
        match self.routes.get(index) {
            Some((header, fields)) => format!(
                "{} line {}: ",
                self.file,
                fields.get(field).unwrap_or(header)
            ),
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use serde_json::json;

    use super::*;
    use crate::domain::{FoundBy, IncidentState};

    #[derive(Deserialize)]
    struct File {
        alerts: Alerts,
    }

    #[derive(Deserialize)]
    struct Alerts {
        routes: Vec<RouteConfig>,
    }

    const CHANNELS: [&str; 4] = ["ops", "kochi-sms", "aluva-sms", "sentry"];

    fn routes(text: &str) -> Result<Routes, Vec<String>> {
        let file: File = toml::from_str(text).expect("the test TOML parses");
        Routes::build(
            &file.alerts.routes,
            &CHANNELS,
            &ConfigLines::read("slotguard.toml", text),
        )
    }

    fn notification(
        clinic: &str,
        incidents: &[(Event, DuplicateKind, IncidentState)],
    ) -> Notification {
        let alerts: Vec<IncidentAlert> = incidents
            .iter()
            .enumerate()
            .map(|(n, (event, kind, state))| IncidentAlert {
                id: format!("inc-{n}"),
                event: *event,
                kind: *kind,
                key: "5".into(),
                clinic_id: clinic.into(),
                doctor_id: "dr-asha".into(),
                date: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
                state: *state,
                found_by: FoundBy::Realtime,
                members: Vec::new(),
                slots: vec![5],
                tokens: Vec::new(),
                changed_at: None,
            })
            .collect();
        let mut n = super::super::message::compose("n-1", clinic, &alerts);
        if incidents.is_empty() {
            n.event = Event::DailySummary;
            n.incidents = json!([]);
        }
        n
    }

    const PER_CLINIC: &str = r#"
[alerts]
group_wait_seconds = 30

[[alerts.routes]]
clinics = ["kochi"]
events = ["opened", "regressed"]
channels = ["kochi-sms"]

[[alerts.routes]]
clinics = ["aluva"]
channels = ["aluva-sms"]
continue = true

[[alerts.routes]]
kinds = ["slot"]
channels = ["sentry"]
"#;

    #[test]
    fn each_clinic_reaches_its_own_channels_and_unrouted_channels_hear_everything() {
        use DuplicateKind::Slot;
        use IncidentState::Open;
        let routes = routes(PER_CLINIC).unwrap();
        let kochi = notification("kochi", &[(Event::Opened, Slot, Open)]);
        assert_eq!(routes.select(&kochi, &CHANNELS), ["ops", "kochi-sms"]);
        let aluva = notification("aluva", &[(Event::Opened, Slot, Open)]);
        assert_eq!(
            routes.select(&aluva, &CHANNELS),
            ["ops", "aluva-sms", "sentry"],
            "continue = true goes on to the next routes"
        );
        let kochi_grew = notification("kochi", &[(Event::Grew, Slot, Open)]);
        assert_eq!(
            routes.select(&kochi_grew, &CHANNELS),
            ["ops", "sentry"],
            "the first route does not match `grew`, the slot route does"
        );
        let notice = notification("kochi", &[]);
        assert_eq!(
            routes.select(&notice, &CHANNELS),
            ["ops"],
            "a notice has no kind: only the unrouted channel"
        );
    }

    #[test]
    fn without_routes_every_channel_gets_everything() {
        let n = notification(
            "kochi",
            &[(
                Event::Resolved,
                DuplicateKind::Token,
                IncidentState::Resolved,
            )],
        );
        assert_eq!(Routes::none().select(&n, &CHANNELS), CHANNELS);
    }

    #[test]
    fn a_grouped_message_matches_by_any_of_its_incidents_and_by_what_is_true_now() {
        use DuplicateKind::{Slot, Token};
        let routes = routes(
            "[[alerts.routes]]\nkinds = [\"token\"]\nevents = [\"resolved\"]\nchannels = [\"sentry\"]\n",
        )
        .unwrap();
        let mixed = notification(
            "kochi",
            &[
                (Event::Opened, Slot, IncidentState::Open),
                (Event::Opened, Token, IncidentState::Resolved),
            ],
        );
        assert!(routes.select(&mixed, &CHANNELS).contains(&"sentry"));
        let open = notification("kochi", &[(Event::Opened, Token, IncidentState::Open)]);
        assert!(!routes.select(&open, &CHANNELS).contains(&"sentry"));
    }

    #[test]
    fn mistakes_are_refused_naming_their_line() {
        let text = r#"[alerts]
group_wait_seconds = 30

[[alerts.routes]]
clinics = ["kochi"]
channels = ["kochi-sms"]

[[alerts.routes]]
clinics = ["Aluva Clinic"]
kinds = ["slots"]
events = ["open"]
channels = ["aluva-smss"]

[[alerts.routes]]
channels = []
"#;
        let problems = routes(text).unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(
            problems[0]
                .starts_with("slotguard.toml line 9: alerts.routes[1].clinics: \"Aluva Clinic\""),
            "{problems:#?}"
        );
        assert_eq!(
            problems[1],
            "slotguard.toml line 10: alerts.routes[1].kinds: \"slots\" is not a kind; use \"slot\" or \"token\""
        );
        assert!(
            problems[2].starts_with("slotguard.toml line 11: alerts.routes[1].events: \"open\" is not an event; the events are opened, grew,"),
            "{problems:#?}"
        );
        assert_eq!(
            problems[3],
            "slotguard.toml line 12: alerts.routes[1].channels: no channel is named \"aluva-smss\"; the channels are ops, kochi-sms, aluva-sms, sentry"
        );
        assert!(
            problems[4].starts_with(
                "slotguard.toml line 15: alerts.routes[2].channels: must name at least one channel"
            ),
            "{problems:#?}"
        );
    }
}
