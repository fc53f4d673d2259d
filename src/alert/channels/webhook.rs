//! The webhook channel: the notification as JSON, `incidents` included (the receiver is
//! the clinic's own system), `Idempotency-Key` its id.

use super::*;

pub(super) struct WebhookChannel {
    name: String,
    url: Url,
    client: reqwest::Client,
}

pub(super) fn webhook(config: &WebhookConfig, found: &mut Problems) -> Option<WebhookChannel> {
    let url = found.url("url", &config.url)?;
    Some(WebhookChannel {
        name: config.name.trim().to_owned(),
        url,
        client: http_client(HTTP_TIMEOUT),
    })
}

/// The webhook body. `text` is what Slack and Mattermost show; the rest is for
/// receivers that understand slotguard.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookPayload<'a> {
    id: &'a str,
    /// The short reference the SMS of the same notification carries.
    reference: String,
    clinic_id: &'a str,
    event: Event,
    subject: &'a str,
    text: String,
    incidents: &'a serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a serde_json::Value>,
}

#[async_trait]
impl Channel for WebhookChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn wants(&self, _n: &Notification) -> bool {
        true
    }

    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        let payload = WebhookPayload {
            id: &n.id,
            reference: n.reference(),
            clinic_id: &n.clinic_id,
            event: n.event,
            subject: &n.subject,
            // Chat apps show only `text`: lead with the subject so the one line a
            // phone notification shows says what happened.
            text: format!("{}\n{}", n.subject, n.text),
            incidents: &n.incidents,
            details: n.details.as_ref(),
        };
        let request = self
            .client
            .post(self.url.clone())
            .header("Idempotency-Key", &n.id)
            .json(&payload);
        send(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::channels::testkit::*;

    // ------------------------------------------------------------------ webhook

    fn webhook_at(url: &str) -> Box<dyn Channel> {
        channel(&format!(
            "[[alerts.channels]]\nkind = \"webhook\"\nname = \"ops\"\nurl = \"{url}\"\n"
        ))
    }

    #[tokio::test]
    async fn webhook_posts_the_notification_as_json_keyed_by_its_id() {
        let hook = receiver(StatusCode::NO_CONTENT).await;
        let channel = webhook_at(&format!("{}/hooks/slotguard", hook.url));
        let n = notification(Event::Opened);
        assert!(
            channel.wants(&notification(Event::Resolved))
                && channel.wants(&notification(Event::Reminder))
        );

        channel.deliver(&n).await.expect("a 204 is a delivery");

        let received = hook.received();
        assert_eq!(received.len(), 1);
        let request = &received[0];
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/hooks/slotguard")
        );
        assert_eq!(request.header("Idempotency-Key"), n.id);
        assert_eq!(request.header("content-type"), "application/json");
        let body = request.json();
        assert_eq!(body["id"], n.id.as_str());
        assert_eq!(body["clinicId"], "kochi");
        assert_eq!(body["event"], "opened");
        assert_eq!(body["subject"], n.subject.as_str());
        assert_eq!(body["text"], format!("{}\n{}", n.subject, n.text).as_str());
        assert_eq!(body["incidents"], n.incidents);
    }

    async fn webhook_answered(status: StatusCode) -> Result<(), DeliveryError> {
        let hook = receiver(status).await;
        webhook_at(&hook.url)
            .deliver(&notification(Event::Opened))
            .await
    }

    #[tokio::test]
    async fn a_receiver_answering_500_is_a_transient_failure_quoting_its_answer() {
        let error = webhook_answered(StatusCode::INTERNAL_SERVER_ERROR)
            .await
            .unwrap_err();
        assert_eq!(
            error,
            DeliveryError::Transient(
                "the receiver answered 500 Internal Server Error: answer from the test receiver"
                    .to_owned()
            )
        );
    }

    #[tokio::test]
    async fn a_receiver_answering_429_is_a_transient_failure() {
        let error = webhook_answered(StatusCode::TOO_MANY_REQUESTS)
            .await
            .unwrap_err();
        assert!(matches!(error, DeliveryError::Transient(_)), "{error}");
    }

    #[tokio::test]
    async fn a_receiver_answering_400_is_a_permanent_failure() {
        let error = webhook_answered(StatusCode::BAD_REQUEST).await.unwrap_err();
        assert!(matches!(error, DeliveryError::Permanent(_)), "{error}");
    }

    #[tokio::test]
    async fn a_receiver_that_redirects_is_a_permanent_failure_not_a_lost_post() {
        let error = webhook_answered(StatusCode::MOVED_PERMANENTLY)
            .await
            .unwrap_err();
        assert!(matches!(error, DeliveryError::Permanent(_)), "{error}");
    }

    #[tokio::test]
    async fn nothing_listening_is_a_transient_failure() {
        let url = format!("http://127.0.0.1:{}/hook", closed_port());
        let error = webhook_at(&url)
            .deliver(&notification(Event::Opened))
            .await
            .unwrap_err();
        assert!(matches!(error, DeliveryError::Transient(_)), "{error}");
    }

    #[tokio::test]
    async fn a_receiver_slower_than_the_timeout_is_a_transient_failure() {
        let slow = receiver_answering(|_| StatusCode::OK, Duration::from_secs(5)).await;
        let channel = WebhookChannel {
            name: "ops".to_owned(),
            url: Url::parse(&slow.url).unwrap(),
            client: http_client(Duration::from_millis(200)),
        };
        let error = channel
            .deliver(&notification(Event::Opened))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, DeliveryError::Transient(m) if m.contains("timed out")),
            "{error}"
        );
    }
}
