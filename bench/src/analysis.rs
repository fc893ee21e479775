//! Arithmetic on devvault's request log: request classes, load per 100 ms, and requests per
//! credential lifetime against the fewest possible.

use std::time::Duration;

use crate::stack::Req;

/// What a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `database/creds/…`: a new credential.
    Read,
    Renew,
    Revoke,
    /// Logins, token renewals and lookups, `sys/health`.
    Auth,
    /// Anything else (e.g. the mount-type preflight).
    Other,
}

pub fn classify(r: &Req) -> Class {
    let p = r.path.as_str();
    if p.starts_with("/v1/database/creds/") {
        Class::Read
    } else if p.starts_with("/v1/sys/leases/renew") || p.starts_with("/v1/sys/renew") {
        Class::Renew
    } else if p.starts_with("/v1/sys/leases/revoke") || p.starts_with("/v1/sys/revoke") {
        Class::Revoke
    } else if p.starts_with("/v1/auth/") || p.starts_with("/v1/sys/health") {
        Class::Auth
    } else {
        Class::Other
    }
}

pub fn count(reqs: &[Req], class: Class) -> usize {
    reqs.iter().filter(|r| classify(r) == class).count()
}

/// Requests that Vault refused or failed.
pub fn errors(reqs: &[Req]) -> usize {
    reqs.iter().filter(|r| r.status >= 400).count()
}

/// The load a herd puts on Vault, in 100 ms bins.
#[derive(Debug, Clone, Default)]
pub struct Burst {
    pub total: usize,
    /// Most requests in one 100 ms bin.
    pub peak: usize,
    /// Mean requests per 100 ms bin over the reference window (or over the span from the first
    /// request to the last, when that is longer): the rate if the same requests were spread
    /// evenly, so runs with and without splay are compared against the same mean.
    pub mean: f64,
    /// Requests per whole second from the first request, for the details.
    pub per_second: Vec<usize>,
    /// Seconds from the first request to the last.
    pub span_s: f64,
}

impl Burst {
    pub fn peak_over_mean(&self) -> f64 {
        if self.mean > 0.0 {
            self.peak as f64 / self.mean
        } else {
            0.0
        }
    }
}

pub fn burst(reqs: &[Req], window: Duration) -> Burst {
    let (Some(first), Some(last)) = (
        reqs.iter().map(|r| r.ts_ms).min(),
        reqs.iter().map(|r| r.ts_ms).max(),
    ) else {
        return Burst::default();
    };
    let n_bins = ((last - first) / 100 + 1) as usize;
    let mut bins = vec![0usize; n_bins];
    for r in reqs {
        bins[((r.ts_ms - first) / 100) as usize] += 1;
    }
    let window_bins = (window.as_millis() / 100) as usize;
    Burst {
        total: reqs.len(),
        peak: bins.iter().copied().max().unwrap_or(0),
        mean: reqs.len() as f64 / n_bins.max(window_bins).max(1) as f64,
        span_s: (last - first) as f64 / 1000.0,
        per_second: bins.chunks(10).map(|c| c.iter().sum()).collect(),
    }
}

/// A role's lease settings, the agent's rotation cadence and its revoke grace.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub ttl: Duration,
    pub max_ttl: Duration,
    pub cadence: Option<Duration>,
    /// How long a replaced credential must keep working before it is revoked.
    pub grace: Duration,
}

impl Lifetimes {
    /// How long one credential is the current one: its max_ttl, or the cadence when shorter.
    pub fn life(&self) -> Duration {
        self.cadence.map_or(self.max_ttl, |c| c.min(self.max_ttl))
    }

    /// Retired before its max_ttl, so it must be revoked (rather than left to expire).
    fn retired_early(&self) -> bool {
        self.life() + self.grace < self.max_ttl
    }

    /// The fewest requests for one credential: one read; a renewal at each TTL boundary while
    /// it must stay valid (its life, plus the grace when it is retired early, capped at
    /// max_ttl); and a revoke only when it is retired before it would expire by itself.
    pub fn minimum_per_credential(&self) -> u64 {
        let valid = (self.life() + self.grace).min(self.max_ttl).as_secs_f64();
        let renewals = (valid / self.ttl.as_secs_f64()).ceil() as u64 - 1;
        1 + renewals + u64::from(self.retired_early())
    }

    pub fn minimum_per_hour(&self) -> f64 {
        self.minimum_per_credential() as f64 * 3600.0 / self.life().as_secs_f64()
    }
}

/// Requests per credential, measured over whole lifetimes: from the first credential read to
/// the last one, so start-up and the unfinished last credential are left out.
#[derive(Debug, Clone, Default)]
pub struct LifetimeCost {
    /// Complete credential lifetimes observed.
    pub credentials: usize,
    pub reads: usize,
    pub renewals: usize,
    pub revokes: usize,
    /// Requests of any other kind in the same span (auth, preflight).
    pub other: usize,
    pub per_credential: f64,
    pub per_hour: f64,
    /// Mean time a credential was the current one.
    pub mean_life_s: f64,
}

pub fn lifetime_cost(reqs: &[Req]) -> Option<LifetimeCost> {
    let reads: Vec<i64> = reqs
        .iter()
        .filter(|r| classify(r) == Class::Read)
        .map(|r| r.ts_ms)
        .collect();
    let (first, last) = (*reads.first()?, *reads.last()?);
    let credentials = reads.len().checked_sub(1).filter(|n| *n > 0)?;
    let span: Vec<&Req> = reqs
        .iter()
        .filter(|r| r.ts_ms >= first && r.ts_ms < last)
        .collect();
    let of = |c: Class| span.iter().filter(|r| classify(r) == c).count();
    let (reads, renewals, revokes) = (of(Class::Read), of(Class::Renew), of(Class::Revoke));
    let cred_requests = reads + renewals + revokes;
    let span_s = (last - first) as f64 / 1000.0;
    Some(LifetimeCost {
        credentials,
        reads,
        renewals,
        revokes,
        other: span.len() - cred_requests,
        per_credential: cred_requests as f64 / credentials as f64,
        per_hour: cred_requests as f64 * 3600.0 / span_s,
        mean_life_s: span_s / credentials as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ts_ms: i64, path: &str) -> Req {
        Req {
            seq: 0,
            ts_ms,
            method: "GET".into(),
            path: path.into(),
            query: String::new(),
            status: 200,
            duration_ms: 0,
        }
    }

    #[test]
    fn minimum_follows_ttl_and_cadence() {
        let s = Duration::from_secs;
        let a = Lifetimes {
            ttl: s(10),
            max_ttl: s(30),
            cadence: None,
            grace: s(5),
        };
        assert_eq!(a.minimum_per_credential(), 3); // read + 2 renewals
        let b = Lifetimes {
            ttl: s(10),
            max_ttl: s(3600),
            cadence: Some(s(20)),
            grace: s(0),
        };
        assert_eq!(b.minimum_per_credential(), 3); // read + 1 renewal + revoke
        assert!((b.minimum_per_hour() - 540.0).abs() < 1e-9);
        // Valid through a 5 s grace: 25 s needs 2 renewals.
        let c = Lifetimes { grace: s(5), ..b };
        assert_eq!(c.minimum_per_credential(), 4);
    }

    #[test]
    fn burst_bins_by_100ms() {
        let reqs: Vec<Req> = [0, 10, 20, 150, 999]
            .iter()
            .map(|t| req(*t, "/v1/x"))
            .collect();
        let b = burst(&reqs, Duration::ZERO);
        assert_eq!((b.total, b.peak), (5, 3));
        assert!((b.mean - 0.5).abs() < 1e-9);
        assert_eq!(b.per_second, vec![5]);
        // Against a 5 s window the same requests average 0.1 per bin.
        let b = burst(&reqs, Duration::from_secs(5));
        assert!((b.mean - 0.1).abs() < 1e-9);
    }

    #[test]
    fn lifetime_counts_between_first_and_last_read() {
        let reqs = vec![
            req(0, "/v1/auth/approle/login"),
            req(10, "/v1/database/creds/a"),
            req(6000, "/v1/sys/leases/renew"),
            req(20010, "/v1/database/creds/a"),
            req(25000, "/v1/sys/leases/revoke"),
            req(40010, "/v1/database/creds/a"),
            req(45000, "/v1/sys/leases/revoke"),
        ];
        let c = lifetime_cost(&reqs).expect("two lifetimes");
        assert_eq!(
            (c.credentials, c.reads, c.renewals, c.revokes),
            (2, 2, 1, 1)
        );
        assert!((c.per_credential - 2.0).abs() < 1e-9);
        assert!((c.mean_life_s - 20.0).abs() < 1e-9);
    }
}
