//! Prometheus' text exposition format (version 0.0.4), written by hand: each family
//! is a `# HELP` and a `# TYPE` line followed by its samples, one per line,
//! `name{label="value",…} number`.

use std::fmt::Write;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
            Type::Summary => "summary",
        }
    }
}

#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a family. Its samples follow, named `name` (or, for histograms and
    /// summaries, `name_bucket`, `name_sum`, `name_count`).
    pub fn family(&mut self, name: &str, kind: Type, help: &str) {
        let help = help.replace('\\', r"\\").replace('\n', r"\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.as_str());
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            let labels: Vec<String> = labels
                .iter()
                .map(|(label, value)| format!("{label}=\"{}\"", escape_label_value(value)))
                .collect();
            let _ = write!(self.text, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

/// Inside quotes a label value escapes backslash, double quote and line feed.
fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Go's float syntax as Prometheus reads it; Rust writes finite numbers the same way.
pub fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_is_help_type_and_one_line_per_sample() {
        let mut out = Exposition::default();
        out.family("slotguard_bookings_total", Type::Counter, "Bookings.");
        out.sample(
            "slotguard_bookings_total",
            &[("kind", "advance"), ("outcome", "booked")],
            12.0,
        );
        out.sample("slotguard_bookings_total", &[], 0.0025);
        assert_eq!(
            out.into_text(),
            "# HELP slotguard_bookings_total Bookings.\n\
             # TYPE slotguard_bookings_total counter\n\
             slotguard_bookings_total{kind=\"advance\",outcome=\"booked\"} 12\n\
             slotguard_bookings_total 0.0025\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut out = Exposition::default();
        out.family("m", Type::Gauge, "a \\ and\na line");
        out.sample("m", &[("channel", "ops \"east\"\\\nnight")], 1.0);
        let text = out.into_text();
        assert!(text.contains(r"# HELP m a \\ and\na line"), "{text}");
        assert!(
            text.contains(r#"m{channel="ops \"east\"\\\nnight"} 1"#),
            "{text}"
        );
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn infinities_are_written_as_prometheus_reads_them() {
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(10.0), "10");
    }
}
