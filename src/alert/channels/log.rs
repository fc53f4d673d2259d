//! The log channel: one warning line per notification, without the incidents.

use super::*;

pub(super) struct LogChannel {
    pub(super) name: String,
}

#[async_trait]
impl Channel for LogChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "log"
    }

    fn wants(&self, _n: &Notification) -> bool {
        true
    }

    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        log_notification(Some(&self.name), n);
        Ok(())
    }
}

/// Writes `n` to slotguard's own log at warn: a line per incident it names (what
/// happened to it, where), or one line for a notice. Only ids, slots and tokens:
/// logs travel further than alerts do, and `members` rows would name patients.
pub fn log_notification(channel: Option<&str>, n: &Notification) {
    let channel = channel.unwrap_or("server log");
    let incidents = n.incident_alerts();
    if incidents.is_empty() {
        tracing::warn!(
            channel,
            notification = %n.id,
            clinic = %n.clinic_id,
            event = n.event.as_str(),
            summary = %one_line(&n.short_text),
            "{}",
            one_line(&n.subject),
        );
        return;
    }
    for i in &incidents {
        tracing::warn!(
            channel,
            notification = %n.id,
            clinic = %n.clinic_id,
            incident = %i.id,
            event = i.event.as_str(),
            state = i.state.as_str(),
            members = i.members.len(),
            "duplicate booking {}: {} {} of doctor {} on {} at clinic {}",
            i.word(),
            i.kind.as_str(),
            i.key,
            i.doctor_id,
            i.date,
            i.clinic_id,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::alert::channels::testkit::*;

    // ---------------------------------------------------------------------- log

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn log_channel_writes_one_warning_line_without_the_incidents() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let channel = channel("[[alerts.channels]]\nkind = \"log\"\nname = \"log\"\n");
        let n = notification(Event::Regressed);

        channel
            .deliver(&n)
            .await
            .expect("the log channel always succeeds");

        let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(output.lines().count(), 1, "{output}");
        assert_contains(&output, "WARN");
        assert_contains(&output, &n.subject);
        assert_contains(&output, &n.id);
        assert_contains(&output, "event=\"regressed\"");
        assert!(!output.contains("Anu Thomas"), "{output}");
    }
}
