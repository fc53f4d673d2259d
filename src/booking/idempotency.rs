//! Idempotency keys (invariant 5): a key names one request; its hash and the answer
//! are stored with the booking. Here: hashing, and turn-taking between requests with
//! the same key inside this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use crate::auth::sha256_hex;
use crate::domain::FieldError;
use crate::store::IdempotencyRecord;

/// How long a request waits for an earlier one with the same key before answering
/// 409 `idempotency_in_flight`.
pub const WAIT_FOR_EARLIER: Duration = Duration::from_secs(10);

/// How long keys are kept; docs/PRODUCT.md promises at least 24 hours.
pub const KEEP_KEYS: chrono::Duration = chrono::Duration::hours(48);

/// Parses the `Idempotency-Key` header and fingerprints the request: the key is
/// scoped to the API key that sent it; the request is its route and its JSON body
/// with object keys sorted, so whitespace or field order make no difference.
pub fn record(
    api_key_id: &str,
    raw_key: &str,
    route: &str,
    body: &serde_json::Value,
) -> Result<IdempotencyRecord, FieldError> {
    let ok = (1..=255).contains(&raw_key.len()) && raw_key.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(FieldError::new(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(IdempotencyRecord {
        key_hash: sha256_hex(format!("{api_key_id}\n{raw_key}").as_bytes()),
        request_hash: sha256_hex(format!("{route}\n{body}").as_bytes()),
    })
}

/// One async lock per key in use. A std `Mutex` guards the map: it is held only to
/// look up or remove an entry, never across an await.
#[derive(Default)]
pub struct KeyLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holding this means no other request of this process runs with the same key.
pub struct Turn<'a> {
    locks: &'a KeyLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyLocks {
    /// Waits until no earlier request with `key` is running here; `None` if one is
    /// still running after [`WAIT_FOR_EARLIER`].
    pub async fn wait_turn(&self, key: &str) -> Option<Turn<'_>> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(key.to_owned()).or_default().clone()
        };
        let guard = tokio::time::timeout(WAIT_FOR_EARLIER, lock.lock_owned()).await;
        let turn = Turn {
            locks: self,
            key: key.to_owned(),
            guard: guard.ok(),
        };
        turn.guard.is_some().then_some(turn)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self.locks.locks.lock().unwrap_or_else(|e| e.into_inner());
        // The map holds one reference; anyone else waiting holds another.
        if locks
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_order_and_spacing_do_not_change_the_request_hash() {
        let a: serde_json::Value = serde_json::from_str(r#"{"a": 1, "b": [2]}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"b":[2],"a":1}"#).unwrap();
        assert_eq!(
            record("k", "x", "/r", &a).unwrap().request_hash,
            record("k", "x", "/r", &b).unwrap().request_hash
        );
        assert_ne!(
            record("k", "x", "/r", &a).unwrap().request_hash,
            record("k", "x", "/r", &json!({"a": 2}))
                .unwrap()
                .request_hash
        );
    }

    #[test]
    fn keys_are_scoped_to_the_api_key_that_sent_them() {
        let body = json!({});
        assert_ne!(
            record("k1", "x", "/r", &body).unwrap().key_hash,
            record("k2", "x", "/r", &body).unwrap().key_hash
        );
        assert!(record("k", "", "/r", &body).is_err());
        assert!(record("k", "has space", "/r", &body).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_request_with_a_running_key_is_told_it_is_in_flight() {
        let locks = KeyLocks::default();
        let first = locks.wait_turn("k").await.expect("first turn");
        assert!(
            locks.wait_turn("k").await.is_none(),
            "second got a turn while the first ran"
        );
        drop(first);
        assert!(locks.wait_turn("k").await.is_some());
        assert!(locks.locks.lock().unwrap().is_empty());
    }
}
