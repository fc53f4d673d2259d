//! Rate limits of the API: requests per key, and failed authentications per client
//! address. Token buckets in this process's memory; the defaults are far above a
//! clinic's morning rush and the load tester's rates, and low enough that a flood of
//! bad keys is answered from memory (429) instead of costing a database lookup each,
//! while a key that authenticated lately still gets through from that address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::domain::ConfigError;

/// `[limits]` in slotguard.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests one API key may make per second, on average (default 10000).
    pub key_requests_per_second: Option<f64>,
    /// And in one burst (default 20000).
    pub key_burst: Option<f64>,
    /// Failed authentications (unknown, malformed or revoked keys) one client address
    /// may make per minute, on average (default 60).
    pub failed_auth_per_minute: Option<f64>,
    /// And in one burst (default 50).
    pub failed_auth_burst: Option<f64>,
    /// Seconds a client has to send a request's headers, and the longest a kept-alive
    /// connection may sit idle (default 10).
    pub header_timeout_seconds: Option<f64>,
    /// Seconds a client has to send a request's whole body once its headers are in
    /// (default 15).
    pub body_timeout_seconds: Option<f64>,
    /// Client connections open at once (default 10000; lowered to fit under the
    /// process's open-files limit).
    pub max_connections: Option<usize>,
}

/// A sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub per_key: Rate,
    pub failed_auth: Rate,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_key: Rate {
                per_second: 10_000.0,
                burst: 20_000.0,
            },
            failed_auth: Rate {
                per_second: 1.0,
                burst: 50.0,
            },
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(15),
            max_connections: 10_000,
        }
    }
}

/// A timeout of 0.1 s to an hour, in seconds.
fn seconds(name: &str, v: Option<f64>, default: Duration) -> Result<Duration, String> {
    match v {
        None => Ok(default),
        Some(x) if x.is_finite() && (0.1..=3600.0).contains(&x) => Ok(Duration::from_secs_f64(x)),
        Some(x) => Err(format!(
            "limits.{name} = {x}: must be a number of seconds from 0.1 to 3600"
        )),
    }
}

impl LimitsConfig {
    pub fn limits(&self) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let positive = |name: &str, v: Option<f64>, default: f64| match v {
            None => Ok(default),
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            Some(x) => Err(format!("limits.{name} = {x}: must be a number above 0")),
        };
        Ok(Limits {
            per_key: Rate {
                per_second: positive(
                    "key_requests_per_second",
                    self.key_requests_per_second,
                    d.per_key.per_second,
                )?,
                burst: positive("key_burst", self.key_burst, d.per_key.burst)?,
            },
            failed_auth: Rate {
                per_second: positive(
                    "failed_auth_per_minute",
                    self.failed_auth_per_minute.map(|m| m / 60.0),
                    d.failed_auth.per_second,
                )?,
                burst: positive(
                    "failed_auth_burst",
                    self.failed_auth_burst,
                    d.failed_auth.burst,
                )?,
            },
            header_timeout: seconds(
                "header_timeout_seconds",
                self.header_timeout_seconds,
                d.header_timeout,
            )?,
            body_timeout: seconds(
                "body_timeout_seconds",
                self.body_timeout_seconds,
                d.body_timeout,
            )?,
            max_connections: match self.max_connections {
                None => d.max_connections,
                Some(n) if (1..=1_000_000).contains(&n) => n,
                Some(n) => {
                    return Err(
                        format!("limits.max_connections = {n}: must be from 1 to 1000000").into(),
                    )
                }
            },
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets kept before full ones are dropped, so a flood of addresses or keys cannot
/// grow memory without bound.
const MAX_BUCKETS: usize = 100_000;

#[derive(Debug)]
struct Buckets<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: std::hash::Hash + Eq + Clone> Buckets<K> {
    fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `cost` tokens (0 only looks); the wait before one would be there, if not.
    fn take(&self, key: &K, cost: f64, now: Instant) -> Result<(), Duration> {
        let Rate { per_second, burst } = self.rate;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > MAX_BUCKETS {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * per_second < burst
            });
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refilled =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * per_second).min(burst);
        if refilled < cost.max(1.0) {
            bucket.tokens = refilled;
            bucket.at = now;
            return Err(Duration::from_secs_f64(
                ((cost.max(1.0) - refilled) / per_second).max(0.001),
            ));
        }
        bucket.tokens = refilled - cost;
        bucket.at = now;
        Ok(())
    }
}

/// How long a key that authenticated is let through from an address over its
/// failure limit (another client behind the same address, a NAT or a proxy).
const REMEMBER_GOOD: Duration = Duration::from_secs(60);
const MAX_REMEMBERED: usize = 10_000;

/// The limits of one server.
#[derive(Debug)]
pub struct RateLimits {
    limits: Limits,
    keys: Buckets<String>,
    failures: Buckets<IpAddr>,
    /// SHA-256 of keys that authenticated lately, and when.
    good: Mutex<HashMap<String, Instant>>,
}

impl RateLimits {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            keys: Buckets::new(limits.per_key),
            failures: Buckets::new(limits.failed_auth),
            good: Mutex::new(HashMap::new()),
        }
    }

    /// The limits these were made from (the timeouts and the connection cap too).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Notes that `token` authenticated.
    pub fn authenticated(&self, token: &str) {
        let now = Instant::now();
        let mut good = self.good.lock().unwrap_or_else(|e| e.into_inner());
        if good.len() > MAX_REMEMBERED {
            good.retain(|_, at| now.duration_since(*at) < REMEMBER_GOOD);
        }
        good.insert(crate::auth::sha256_hex(token.as_bytes()), now);
    }

    /// Whether `token` authenticated within the last minute: such a key is let
    /// through from an address that is over its failure limit (and still checked).
    pub fn recently_good(&self, token: &str) -> bool {
        let good = self.good.lock().unwrap_or_else(|e| e.into_inner());
        good.get(&crate::auth::sha256_hex(token.as_bytes()))
            .is_some_and(|at| at.elapsed() < REMEMBER_GOOD)
    }

    /// Whether `address` may try to authenticate now (it has failed too often if not).
    pub fn may_try(&self, address: IpAddr) -> Result<(), Duration> {
        self.failures.take(&address, 0.0, Instant::now())
    }

    /// Counts a failed authentication from `address`.
    pub fn failed(&self, address: IpAddr) {
        let _ = self.failures.take(&address, 1.0, Instant::now());
    }

    /// Counts one request of key `id`; the wait before the next, when over its rate.
    pub fn request(&self, id: &str) -> Result<(), Duration> {
        self.keys.take(&id.to_owned(), 1.0, Instant::now())
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_a_burst_through_then_asks_to_wait_until_it_refills() {
        let buckets = Buckets::new(Rate {
            per_second: 2.0,
            burst: 3.0,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(buckets.take(&"k", 1.0, t0).is_ok());
        }
        let wait = buckets.take(&"k", 1.0, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
        assert!(buckets
            .take(&"k", 1.0, t0 + Duration::from_millis(500))
            .is_ok());
        assert!(buckets.take(&"other", 1.0, t0).is_ok(), "keys are apart");
    }

    #[test]
    fn looking_costs_nothing_and_failures_use_up_an_address() {
        let limits = RateLimits::new(Limits {
            failed_auth: Rate {
                per_second: 1.0,
                burst: 2.0,
            },
            ..Limits::default()
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..5 {
            assert!(limits.may_try(ip).is_ok());
        }
        limits.failed(ip);
        limits.failed(ip);
        assert!(limits.may_try(ip).is_err());
    }

    #[test]
    fn limits_come_from_the_config_and_nonsense_is_refused() {
        let config: LimitsConfig = toml::from_str("failed_auth_per_minute = 120").unwrap();
        assert_eq!(config.limits().unwrap().failed_auth.per_second, 2.0);
        let bad: LimitsConfig = toml::from_str("key_burst = 0").unwrap();
        assert!(bad.limits().unwrap_err().contains("limits.key_burst"));
    }
}
