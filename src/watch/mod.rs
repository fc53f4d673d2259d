//! Watch: slotguard beside an existing booking app. The app forwards its appointment
//! documents; slotguard mirrors them verbatim (no uniqueness: the mirror holds the
//! external truth, duplicates included) so the detector and the audit can find the
//! double bookings the app let through.

pub mod import;
pub mod importer;
pub mod kloqo;

#[cfg(test)]
mod order_tests {
    use super::kloqo::parse_document;
    use serde_json::json;

    fn event(status: &str, extra: serde_json::Value) -> crate::domain::WatchedAppointment {
        let mut doc = json!({"id": "a", "clinicId": "kochi", "doctorId": "dr-asha",
            "date": "1 December 2026", "slotIndex": 5, "status": status,
            "createdAt": "2026-12-01T03:00:00Z"});
        for (k, v) in extra.as_object().unwrap() {
            doc[k] = v.clone();
        }
        parse_document(&doc).unwrap()
    }

    #[test]
    fn the_sources_time_then_updated_at_then_created_at_order_two_events() {
        let later_write = event("Pending", json!({"updateTime": "2026-12-01T04:00:00Z"}));
        let earlier_write = event(
            "Cancelled",
            json!({"updateTime": "2026-12-01T03:59:59Z", "updatedAt": "2026-12-01T05:00:00Z"}),
        );
        assert!(
            later_write.order() > earlier_write.order(),
            "updateTime beats updatedAt"
        );
        let updated = event("Pending", json!({"updatedAt": "2026-12-01T03:30:00Z"}));
        assert!(updated.order() > event("Cancelled", json!({})).order());
    }

    #[test]
    fn the_same_version_is_ordered_by_stage_then_text_whatever_came_first() {
        let (pending, confirmed, cancelled) = (
            event("Pending", json!({})),
            event("Confirmed", json!({})),
            event("Cancelled", json!({})),
        );
        assert!(cancelled.order() > confirmed.order() && confirmed.order() > pending.order());
        assert_eq!(
            cancelled.order().decided_by(&pending.order()),
            "same version: the later stage of the day"
        );
        let (a, b) = (
            event("Pending", json!({"slotIndex": 6})),
            event("Pending", json!({"slotIndex": 7})),
        );
        assert_ne!(a.order(), b.order(), "different texts never tie");
        assert_eq!(a.order().max(b.order()), b.order().max(a.order()));
        assert_eq!(a.order(), event("Pending", json!({"slotIndex": 6})).order());
    }
}
