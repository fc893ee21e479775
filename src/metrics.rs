//! `GET /metrics`: the agent's state in the Prometheus text format (0.0.4), encoded by
//! `prometheus-client`.
//!
//! Two sources feed one scrape. Vault request counts and latencies are live metrics
//! ([`VaultRequests`], owned by the agent, fed by the Vault client's observer hook and handed
//! to the probe router).
//! Everything per secret, and the auth counters, is read from a [`State`] snapshot at scrape
//! time by a collector, so there is one source of truth for `/status` and `/metrics` and a
//! "seconds until expiry" that is exact when scraped rather than when last updated.
//!
//! Every label value is a configured secret name (validated to `[A-Za-z0-9._-]`), a fixed word
//! from a closed set, or an HTTP status code: never a path with an id in it, a lease id, a
//! username or anything secret, and the number of series stays bounded. docs/metrics.md lists
//! every metric.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::state::{AuthCounters, SecretStatus, State, REVOKE_HOWS, STAGES};
use crate::vault::client::RequestKind;

/// What `/metrics` answers with as `Content-Type`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric's name starts with this.
const PREFIX: &str = "vault_rotator";

/// Latency buckets in seconds: a healthy Vault answers in milliseconds, a struggling one in
/// seconds, and the default request timeout is 30 s.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    /// The HTTP status code, or "error" when no complete answer arrived.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

type LatencyFamily = Family<KindLabel, Histogram, fn() -> Histogram>;

/// Vault request counts by kind and status, and latency by kind. Clones share the counts.
#[derive(Clone, Debug)]
pub struct VaultRequests {
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
}

impl Default for VaultRequests {
    fn default() -> Self {
        VaultRequests {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl VaultRequests {
    /// Counts one request; what the Vault client's observer calls.
    pub fn observe(&self, kind: RequestKind, status: Option<u16>, elapsed: Duration) {
        let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.requests
            .get_or_create(&RequestLabels {
                kind: kind.as_str(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// The whole exposition, as of `now`.
pub fn encode(
    state: &State,
    vault: &VaultRequests,
    now: SystemTime,
) -> Result<String, std::fmt::Error> {
    // A registry per scrape is a handful of small allocations; it lets the snapshot be owned
    // data instead of a collector that holds the State that holds it.
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register(
        "build",
        "Build information; the value is always 1",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register_collector(Box::new(Snapshot {
        started_at: state.started_at(),
        secrets: state.snapshot(),
        auth: state.auth_counters(),
        now,
    }));
    let vault = vault.clone();
    registry.register(
        "vault_requests",
        "Requests sent to Vault, by kind of request and HTTP status (\"error\": no complete answer)",
        vault.requests,
    );
    registry.register_with_unit(
        "vault_request_duration",
        "Time from sending a request to Vault to having read its whole answer, by kind of request",
        Unit::Seconds,
        vault.latency,
    );
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// What one scrape reads from the state.
#[derive(Debug)]
struct Snapshot {
    started_at: SystemTime,
    secrets: Vec<SecretStatus>,
    auth: AuthCounters,
    now: SystemTime,
}

/// Labels of one sample: (name, value) pairs.
type Labels = Vec<(&'static str, String)>;

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let one = |value: f64| vec![(Labels::new(), value)];
        gauge(
            &mut encoder,
            "start_time",
            "When the agent started, in seconds since the Unix epoch.",
            Some(&Unit::Seconds),
            one(unix_seconds(self.started_at)),
        )?;
        self.encode_secrets(&mut encoder)?;
        self.encode_auth(&mut encoder)
    }
}

impl Snapshot {
    /// One sample per secret that has a value.
    fn per_secret<T>(&self, value: impl Fn(&SecretStatus) -> Option<T>) -> Vec<(Labels, T)> {
        self.secrets
            .iter()
            .filter_map(|s| value(s).map(|v| (secret_label(s), v)))
            .collect()
    }

    fn encode_secrets(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(
            encoder,
            "secret_expires_in",
            "Seconds until the credential in the file expires (negative once expired; absent \
             for secrets without an expiry, such as KV).",
            Some(&Unit::Seconds),
            self.per_secret(|s| s.expires_at.map(|at| seconds_between(self.now, at))),
        )?;
        gauge(
            encoder,
            "secret_last_write_timestamp",
            "When the credential file was last written successfully, in seconds since the Unix \
             epoch (absent until the first write).",
            Some(&Unit::Seconds),
            self.per_secret(|s| s.written_at.map(unix_seconds)),
        )?;
        gauge(
            encoder,
            "secret_output_files",
            "Files in the secret's --output-dir set as last written (absent for a single-file \
             output): a field that appears or goes away changes it.",
            None,
            self.per_secret(|s| s.output_set.as_ref().map(|o| o.files.len() as f64)),
        )?;
        gauge(
            encoder,
            "secret_dies_with_login",
            "1 when the credential cannot outlive the Vault token that created it and no newer \
             token can be had: it is kept until its end, then readiness fails.",
            None,
            self.per_secret(|s| Some(if s.dies_with_login { 1.0 } else { 0.0 })),
        )?;
        counter(
            encoder,
            "secret_rotations",
            "New credentials that replaced a previous one (by cadence, lease end, or a manual \
             rotation).",
            self.per_secret(|s| Some(s.rotations)),
        )?;
        counter(
            encoder,
            "secret_renewals",
            "Successful lease renewals.",
            self.per_secret(|s| Some(s.renewals)),
        )?;
        let failures = self
            .secrets
            .iter()
            .flat_map(|s| {
                STAGES.iter().map(move |stage| {
                    let mut labels = secret_label(s);
                    labels.push(("stage", stage.to_string()));
                    (labels, s.failures_by_stage.get(stage).copied().unwrap_or(0))
                })
            })
            .collect();
        let revokes = self
            .secrets
            .iter()
            .flat_map(|s| {
                REVOKE_HOWS.iter().map(move |how| {
                    let mut labels = secret_label(s);
                    labels.push(("how", how.to_string()));
                    (labels, s.revokes_by_how.get(how).copied().unwrap_or(0))
                })
            })
            .collect();
        counter(
            encoder,
            "secret_revokes",
            "Old credentials revoked after a rotation, by how: drained (the drain check found \
             no session of the old user left), grace (the grace ran out first) or check_failed \
             (the drain check failed, so the grace decided).",
            revokes,
        )?;
        gauge(
            encoder,
            "secret_last_drain",
            "For the last old credential revoked after a rotation: seconds from the new \
             credential's write to the revoke (absent until one is revoked).",
            Some(&Unit::Seconds),
            self.per_secret(|s| s.last_revoke.as_ref().map(|r| r.drain_seconds)),
        )?;
        counter(
            encoder,
            "secret_failures",
            "Failures by stage: auth, fetch, renew, revoke, write, render. The last good file \
             is kept on every failure.",
            failures,
        )?;
        let notifications = self
            .secrets
            .iter()
            .flat_map(|s| {
                s.notifications_by_hook.iter().flat_map(move |(hook, n)| {
                    [("ok", n.ok), ("failed", n.failed)].map(|(result, count)| {
                        let mut labels = secret_label(s);
                        labels.push(("hook", hook.clone()));
                        labels.push(("result", result.to_string()));
                        (labels, count)
                    })
                })
            })
            .collect();
        counter(
            encoder,
            "notifications",
            "App notifications after a credential change, by hook (exec, signal, http) and \
             result (ok, failed); every configured hook starts at 0.",
            notifications,
        )
    }

    fn encode_auth(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let results = |ok: u64, failed: u64| {
            vec![
                (vec![("result", "ok".to_string())], ok),
                (vec![("result", "failed".to_string())], failed),
            ]
        };
        let a = self.auth;
        counter(
            encoder,
            "auth_logins",
            "Logins to Vault, by result.",
            results(a.logins, a.login_failures),
        )?;
        counter(
            encoder,
            "auth_token_renewals",
            "Renewals of the agent's own Vault token, by result.",
            results(a.token_renewals, a.token_renew_failures),
        )
    }
}

fn secret_label(s: &SecretStatus) -> Labels {
    vec![("secret", s.name.clone())]
}

/// One gauge family; nothing is written when it has no samples, so an absent value stays
/// absent instead of turning into a misleading 0.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: Vec<(Labels, f64)>,
) -> Result<(), std::fmt::Error> {
    if samples.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: Vec<(Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    if samples.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn unix_seconds(t: SystemTime) -> f64 {
    seconds_between(UNIX_EPOCH, t)
}

/// `to - from` in seconds, negative when `to` is earlier.
fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::SecretKind;
    use crate::state::{AuthCount, EventKind, RevokeHow, SecretInfo};

    fn state() -> std::sync::Arc<State> {
        State::new(vec![
            SecretInfo {
                name: "db".into(),
                path: "database/creds/app".into(),
                kind: SecretKind::Dynamic,
            },
            SecretInfo {
                name: "kv".into(),
                path: "secret/data/app".into(),
                kind: SecretKind::KvV2,
            },
        ])
    }

    /// The value of the sample whose line starts with `series` (name and labels, exactly).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn every_metric_follows_the_state() {
        let state = state();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        state.update("db", |s| {
            s.expires_at = Some(now + Duration::from_secs(90));
            s.lease_id = Some("database/creds/app/LEASEID".into());
            s.username = Some("v-approle-app-USER".into());
        });
        state.record_at("db", EventKind::Written, "", now - Duration::from_secs(5));
        state.record("db", EventKind::Renewed, "");
        state.record("db", EventKind::Renewed, "");
        state.record("db", EventKind::Rotated, "");
        state.record_failure("db", "renew", "renew: HTTP 500");
        state.record_failure("db", "auth", "auth: login failed");
        state.record_failure("db", "renew", "renew: HTTP 500");
        state.notify_result("db", "exec", true);
        state.notify_result("db", "http", false);
        state.auth_event(AuthCount::Login);
        state.auth_event(AuthCount::LoginFailed);
        state.auth_event(AuthCount::Renewed);
        let vault = VaultRequests::default();
        vault.observe(RequestKind::Login, Some(200), Duration::from_millis(3));
        vault.observe(
            RequestKind::LeaseRenew,
            Some(500),
            Duration::from_millis(40),
        );
        vault.observe(RequestKind::LeaseRenew, None, Duration::from_secs(31));

        state.update("kv", |s| {
            s.output_set = Some(crate::state::OutputSet {
                dir: "/secrets/kv".into(),
                files: vec!["password".into(), "username".into(), "version".into()],
                generation: None,
            })
        });

        let text = encode(&state, &vault, now).unwrap();
        let m =
            |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
        assert_eq!(
            m("vault_rotator_secret_expires_in_seconds{secret=\"db\"}"),
            90.0
        );
        assert_eq!(
            m("vault_rotator_secret_last_write_timestamp_seconds{secret=\"db\"}"),
            1_799_999_995.0
        );
        assert_eq!(m("vault_rotator_secret_renewals_total{secret=\"db\"}"), 2.0);
        assert_eq!(m("vault_rotator_secret_output_files{secret=\"kv\"}"), 3.0);
        assert_eq!(
            sample(&text, "vault_rotator_secret_output_files{secret=\"db\"}"),
            None,
            "absent for a single file"
        );
        assert_eq!(
            m("vault_rotator_secret_rotations_total{secret=\"db\"}"),
            1.0
        );
        let failures = |secret: &str, stage: &str| {
            m(&format!(
                "vault_rotator_secret_failures_total{{secret=\"{secret}\",stage=\"{stage}\"}}"
            ))
        };
        assert_eq!(failures("db", "renew"), 2.0);
        assert_eq!(failures("db", "auth"), 1.0);
        for stage in STAGES {
            assert_eq!(failures("kv", stage), 0.0, "every stage starts at 0");
        }
        assert_eq!(
            m("vault_rotator_notifications_total{secret=\"db\",hook=\"exec\",result=\"ok\"}"),
            1.0
        );
        assert_eq!(
            m("vault_rotator_notifications_total{secret=\"db\",hook=\"http\",result=\"failed\"}"),
            1.0
        );
        assert_eq!(m("vault_rotator_auth_logins_total{result=\"ok\"}"), 1.0);
        assert_eq!(m("vault_rotator_auth_logins_total{result=\"failed\"}"), 1.0);
        assert_eq!(
            m("vault_rotator_auth_token_renewals_total{result=\"ok\"}"),
            1.0
        );
        assert_eq!(
            m("vault_rotator_vault_requests_total{kind=\"lease-renew\",status=\"500\"}"),
            1.0
        );
        assert_eq!(
            m("vault_rotator_vault_requests_total{kind=\"lease-renew\",status=\"error\"}"),
            1.0
        );
        assert_eq!(
            m("vault_rotator_vault_request_duration_seconds_bucket{kind=\"lease-renew\",le=\"0.05\"}"),
            1.0
        );
        assert_eq!(
            m("vault_rotator_vault_request_duration_seconds_count{kind=\"lease-renew\"}"),
            2.0
        );
        assert_eq!(
            m(&format!(
                "vault_rotator_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )),
            1.0
        );
        assert!(m("vault_rotator_start_time_seconds") > 1.7e9);
        // No expiry, no write yet: absent rather than a misleading 0.
        assert!(
            !text.contains("expires_in_seconds{secret=\"kv\"}"),
            "{text}"
        );
        assert!(!text.contains("last_write_timestamp_seconds{secret=\"kv\"}"));
        assert!(
            !text.contains("LEASEID") && !text.contains("USER"),
            "{text}"
        );
    }

    #[test]
    fn every_family_has_help_and_type() {
        let state = state();
        state.update("db", |s| s.expires_at = Some(SystemTime::now()));
        state.record("db", EventKind::Written, "");
        state.notify_result("db", "signal", true);
        state.record_retired("db", "l/0", RevokeHow::Drained, Duration::from_secs(3));
        let vault = VaultRequests::default();
        vault.observe(RequestKind::SecretRead, Some(200), Duration::from_millis(1));
        let text = encode(&state, &vault, SystemTime::now()).unwrap();
        assert!(
            text.contains("vault_rotator_secret_revokes_total{secret=\"db\",how=\"drained\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("vault_rotator_secret_revokes_total{secret=\"db\",how=\"grace\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("vault_rotator_secret_last_drain_seconds{secret=\"db\"} 3.0\n"),
            "{text}"
        );
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(families.len(), 15, "{text}");
        for family in families {
            let help = format!("# HELP {family} ");
            let help = text.lines().find(|l| l.starts_with(&help));
            assert!(
                help.is_some_and(|h| h.ends_with('.')),
                "HELP of {family}: {help:?}"
            );
            assert!(family.starts_with("vault_rotator_"), "{family}");
        }
    }
}
