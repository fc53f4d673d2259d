//! The subset of an artillery script the clinic's plan used: `config.target`,
//! `config.phases[].duration/arrivalRate/rampTo`, and `scenarios[].flow[].post.url/json`.
//! Other keys are ignored, so an existing script runs unchanged.

use serde::Deserialize;
use serde_json::Value;

use super::arrivals::Phase;

#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub target: Option<String>,
    pub phases: Vec<Phase>,
    /// Each scenario's POST steps, with artillery's `weight` (default 1).
    pub scenarios: Vec<(u32, Vec<Post>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Post {
    pub url: String,
    pub json: Value,
}

#[derive(Deserialize)]
struct RawScript {
    config: RawConfig,
    #[serde(default)]
    scenarios: Vec<RawScenario>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    target: Option<String>,
    #[serde(default)]
    phases: Vec<RawPhase>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPhase {
    duration: f64,
    arrival_rate: f64,
    ramp_to: Option<f64>,
}

#[derive(Deserialize)]
struct RawScenario {
    weight: Option<u32>,
    #[serde(default)]
    flow: Vec<RawStep>,
}

#[derive(Deserialize)]
struct RawStep {
    post: Option<RawPost>,
}

#[derive(Deserialize)]
struct RawPost {
    url: String,
    json: Option<Value>,
}

pub fn parse(text: &str) -> Result<Script, String> {
    let raw: RawScript =
        serde_yaml::from_str(text).map_err(|e| format!("not an artillery script: {e}"))?;
    if raw.config.phases.is_empty() {
        return Err("config.phases is empty: nothing to run".into());
    }
    let phases: Vec<Phase> = raw
        .config
        .phases
        .iter()
        .map(|p| Phase {
            duration: p.duration,
            arrival_rate: p.arrival_rate,
            ramp_to: p.ramp_to,
        })
        .collect();
    for (i, p) in phases.iter().enumerate() {
        p.check().map_err(|e| format!("config.phases[{i}]: {e}"))?;
    }
    let scenarios: Vec<(u32, Vec<Post>)> = raw
        .scenarios
        .into_iter()
        .map(|s| {
            let posts = s
                .flow
                .into_iter()
                .filter_map(|step| step.post)
                .map(|p| Post {
                    url: p.url,
                    json: p.json.unwrap_or_else(|| Value::Object(Default::default())),
                })
                .collect();
            (s.weight.unwrap_or(1), posts)
        })
        .filter(|(weight, posts): &(u32, Vec<Post>)| *weight > 0 && !posts.is_empty())
        .collect();
    if scenarios.is_empty() {
        return Err("no scenario has a `post` step: nothing to send".into());
    }
    Ok(Script {
        target: raw.config.target,
        phases,
        scenarios,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_clinics_plan_reads_as_written() {
        let script = parse(
            r#"
config:
  target: "http://localhost:3000"
  phases:
    - duration: 60
      arrivalRate: 10
      name: "Morning rush"
  plugins:
    expect: {}
scenarios:
  - name: "Book slot 5"
    flow:
      - post:
          url: "/api/book-appointment"
          json:
            clinicId: "demo-clinic"
            slotIndex: 5
      - think: 1
"#,
        )
        .unwrap();
        assert_eq!(script.target.as_deref(), Some("http://localhost:3000"));
        assert_eq!(
            script.phases,
            vec![Phase {
                duration: 60.0,
                arrival_rate: 10.0,
                ramp_to: None
            }]
        );
        assert_eq!(script.scenarios.len(), 1);
        let (weight, posts) = &script.scenarios[0];
        assert_eq!(*weight, 1);
        assert_eq!(posts[0].url, "/api/book-appointment");
        assert_eq!(
            posts[0].json,
            json!({"clinicId": "demo-clinic", "slotIndex": 5})
        );
    }

    #[test]
    fn ramps_and_weights_are_kept() {
        let script = parse(
            "config:\n  phases:\n    - {duration: 10, arrivalRate: 1, rampTo: 5}\nscenarios:\n  - weight: 3\n    flow:\n      - post: {url: /a}\n",
        )
        .unwrap();
        assert_eq!(script.phases[0].ramp_to, Some(5.0));
        assert_eq!(script.scenarios[0].0, 3);
    }

    #[test]
    fn scripts_that_cannot_run_say_why() {
        assert!(parse("config: {phases: []}\nscenarios: []")
            .unwrap_err()
            .contains("phases"));
        assert!(parse(
            "config:\n  phases: [{duration: 1, arrivalRate: 1}]\nscenarios: [{flow: [{think: 1}]}]"
        )
        .unwrap_err()
        .contains("post"));
        assert!(
            parse("config:\n  phases: [{duration: 0, arrivalRate: 1}]\nscenarios: []")
                .unwrap_err()
                .contains("phases[0]")
        );
        assert!(parse(": not yaml :").is_err());
    }
}
