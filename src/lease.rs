//! Pure timing decisions: when to renew, when to re-issue, how long to back off.
//!
//! Nothing here sleeps or talks to Vault; every function takes `now` and a random source, so
//! the rules are tested exactly, and the loops in `agent` stay thin.
//!
//! The rules, and why:
//! - Trust the `lease_duration` Vault returns, never the increment asked for: Vault caps it at
//!   max_ttl and may ignore the increment.
//! - Renew at about two thirds of the lease, a little earlier at random, so a fleet does not
//!   renew in lockstep and a slow or failed renewal still has a third of the lease to retry in.
//! - A credential dies at the earlier of its lease's expiry and the expiry of the token that
//!   created it (Vault revokes child leases with their token). When that deadline cannot be
//!   pushed out any more (renewal capped, not renewable, token at its own max), issue a new
//!   credential a third of the lease ahead, so the app always holds one that works.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// Never plan to re-issue closer to the deadline than this: issuing, writing and the app's
/// reconnect must fit in between.
pub const MIN_LEAD: Duration = Duration::from_secs(2);

/// Vault truncates a capped lease's TTL to whole seconds, so each renewal near max_ttl may
/// pull the lease's end in by up to a second, and the answer to one may be lost (a timeout).
/// The end we plan with stays this much short of what Vault last said.
pub const ROUNDING: Duration = Duration::from_secs(1);

/// The state of one lease as Vault last described it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// When the credential was issued.
    pub issued_at: Instant,
    /// The first `lease_duration`: the role's TTL, which renewals ask for again.
    pub ttl: Duration,
    /// When the lease ends unless renewed.
    pub expires_at: Instant,
    /// When we last renewed (or issued) it.
    pub renewed_at: Instant,
    /// The last `lease_duration` Vault returned.
    pub last_duration: Duration,
    pub renewable: bool,
    /// Vault returned less than we asked for: the lease is pinned to its max_ttl.
    pub capped: bool,
    /// The latest end a renewal whose answer was lost may have given it: Vault may have
    /// applied it. Cleared by the next answered renewal, which sets the end afresh.
    pub may_end_by: Option<Instant>,
}

/// How late after sending Vault may still apply a request whose answer is lost: more than
/// the client's request timeout (30 s at most).
const UNANSWERED_SLACK: Duration = Duration::from_secs(60);

impl Lease {
    pub fn issued(now: Instant, lease_duration: Duration, renewable: bool) -> Lease {
        Lease {
            issued_at: now,
            ttl: lease_duration,
            expires_at: now + lease_duration.saturating_sub(ROUNDING),
            renewed_at: now,
            last_duration: lease_duration,
            renewable,
            capped: false,
            may_end_by: None,
        }
    }

    /// A renewal sent at `sent` went unanswered (timeout, lost connection, a 5xx): Vault may
    /// have extended the lease by up to `asked`, counted from when it got the request, which
    /// can be as late as the client's timeout after `sent`.
    pub fn renewal_unanswered(&mut self, sent: Instant, asked: Duration) {
        let end = sent + asked + UNANSWERED_SLACK;
        self.may_end_by = Some(self.may_end_by.map_or(end, |e| e.max(end)));
    }

    /// The latest the lease may live: its known end, or later if a lost renewal took effect.
    pub fn latest_end(&self) -> Instant {
        self.may_end_by
            .map_or(self.expires_at, |e| e.max(self.expires_at))
    }

    /// Applies a renewal's answer. `capped` is set when Vault granted less than `asked`, which
    /// means max_ttl is near and renewing again cannot extend the lease.
    pub fn renewed(&mut self, now: Instant, asked: Duration, granted: Duration, renewable: bool) {
        self.renewed_at = now;
        self.expires_at = now + granted.saturating_sub(ROUNDING);
        self.last_duration = granted;
        self.renewable = renewable;
        self.may_end_by = None;
        // Vault answers in whole seconds, so any shortfall is its max_ttl cap.
        if granted < asked {
            self.capped = true;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The lease or its token cannot be extended past this point.
    Deadline,
    /// The token that created the lease is about to end, taking the lease with it.
    TokenDeadline,
    /// `--rotate-every` came round.
    Cadence,
}

/// The fixed end of a token that can no longer be renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenEnd {
    pub expires_at: Instant,
    /// The token's lifetime when issued; sets how early its leases are replaced.
    pub ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Renew(Instant),
    Reissue(Instant, Why),
}

impl Next {
    pub fn at(self) -> Instant {
        match self {
            Next::Renew(at) | Next::Reissue(at, _) => at,
        }
    }
}

/// How long before `deadline` a replacement is issued, for a lease of `ttl`: a third of it,
/// plus up to a tenth at random, never less than [`MIN_LEAD`].
pub fn reissue_lead(ttl: Duration, rng: &mut impl Rng) -> Duration {
    let third = ttl / 3;
    let jitter = ttl.mul_f64(rng.random_range(0.0..0.1));
    (third + jitter).max(MIN_LEAD)
}

/// Delay from a renewal to the next one: two thirds of what Vault granted, less up to a tenth
/// at random.
pub fn renew_delay(granted: Duration, rng: &mut impl Rng) -> Duration {
    let two_thirds = granted.mul_f64(2.0 / 3.0);
    let jitter = granted.mul_f64(rng.random_range(0.0..0.1));
    two_thirds.saturating_sub(jitter)
}

/// The next thing to do for a dynamic credential.
///
/// `token` is the hard end of the token that created the lease, or `None` when it does not
/// expire or can still be renewed.
pub fn plan(
    now: Instant,
    lease: &Lease,
    token: Option<TokenEnd>,
    rotate_every: Option<Duration>,
    rng: &mut impl Rng,
) -> Next {
    let lead = reissue_lead(lease.ttl, rng);
    let mut reissue: Option<(Instant, Why)> = None;
    let mut consider = |at: Instant, why: Why| {
        if reissue.is_none_or(|(cur, _)| at < cur) {
            reissue = Some((at, why));
        }
    };
    let extendable = lease.renewable && !lease.capped;
    if !extendable {
        consider(
            lease.expires_at.checked_sub(lead).unwrap_or(now),
            Why::Deadline,
        );
    } else {
        // Renewals that keep failing (Vault sealed, down) can outlast the lease: once it has
        // ended, only a new credential helps.
        consider(lease.expires_at, Why::Deadline);
    }
    if let Some(t) = token {
        if t.expires_at < lease.expires_at || extendable {
            // Measured against the token's own lifetime: a lease's long lead would otherwise
            // re-issue at once under a short-lived token, over and over.
            let lead = reissue_lead(t.ttl, rng);
            consider(
                t.expires_at.checked_sub(lead).unwrap_or(now),
                Why::TokenDeadline,
            );
        }
    }
    if let Some(every) = rotate_every {
        consider(lease.issued_at + every, Why::Cadence);
    }
    let renew = extendable.then(|| lease.renewed_at + renew_delay(lease.last_duration, rng));
    match (renew, reissue) {
        // A renewal that would land inside the re-issue lead is pointless: re-issue instead.
        (Some(r), Some((at, why))) if at <= r.max(now) => Next::Reissue(at.max(now), why),
        (Some(r), _) => Next::Renew(r.max(now)),
        (None, Some((at, why))) => Next::Reissue(at.max(now), why),
        (None, None) => Next::Reissue(now, Why::Deadline),
    }
}

/// When a token that cannot be renewed further should be replaced by a new login: two thirds
/// of the way to its expiry, so there is time to retry a failing login.
pub fn relogin_at(now: Instant, expires_at: Instant) -> Instant {
    now + expires_at.saturating_duration_since(now).mul_f64(2.0 / 3.0)
}

/// Exponential backoff with jitter: `min`, doubling to `max`, each step cut by up to a quarter
/// at random (as Vault's own agent does), and never shorter than a server's `Retry-After`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            failures: 0,
        }
    }

    pub fn next_delay(&mut self, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let exp = self
            .min
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let jittered = exp.mul_f64(rng.random_range(0.75..=1.0));
        match retry_after {
            Some(ra) => jittered.max(ra.min(self.max)),
            None => jittered,
        }
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// A random delay in `[0, max)`, for the start-up splay.
pub fn splay(max: Duration, rng: &mut impl Rng) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    max.mul_f64(rng.random_range(0.0..1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn an_unanswered_renewal_may_extend_the_lease_until_an_answer_says_otherwise() {
        let t0 = Instant::now();
        let mut l = Lease::issued(t0, S(600), true);
        assert_eq!(l.latest_end(), l.expires_at);
        // Lost at 400 s: Vault may have made it 400 + 600 s, or a little later.
        l.renewal_unanswered(t0 + S(400), S(600));
        assert!(l.latest_end() >= t0 + S(1000), "{:?}", l.latest_end() - t0);
        assert_eq!(l.expires_at, t0 + S(599), "the known end does not move");
        // An answered renewal sets the end afresh.
        l.renewed(t0 + S(450), S(600), S(600), true);
        assert_eq!(l.latest_end(), t0 + S(1049));
    }

    #[test]
    fn renews_between_57_and_67_percent() {
        let mut r = rng();
        for _ in 0..1000 {
            let d = renew_delay(S(3600), &mut r);
            assert!(d >= S(2040) && d <= S(2400), "{d:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_renewable_lease_is_renewed_not_reissued() {
        let now = Instant::now();
        let lease = Lease::issued(now, S(60), true);
        match plan(now, &lease, None, None, &mut rng()) {
            Next::Renew(at) => {
                let d = at - now;
                assert!(d >= S(36) && d <= S(40), "{d:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn capped_lease_is_reissued_a_third_ahead_of_expiry() {
        let t0 = Instant::now();
        let mut lease = Lease::issued(t0, S(60), true);
        let t1 = t0 + S(40);
        lease.renewed(t1, S(60), S(30), true); // max_ttl 70s: Vault granted only 30s
        assert!(lease.capped);
        match plan(t1, &lease, None, None, &mut rng()) {
            Next::Reissue(at, Why::Deadline) => {
                let before_expiry = lease.expires_at - at;
                assert!(
                    before_expiry >= S(20) && before_expiry <= S(26),
                    "{before_expiry:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn token_expiry_before_lease_expiry_forces_reissue() {
        let now = Instant::now();
        let lease = Lease::issued(now, S(3600), true);
        let token = TokenEnd {
            expires_at: now + S(600),
            ttl: S(900),
        };
        match plan(now, &lease, Some(token), None, &mut rng()) {
            Next::Reissue(at, Why::TokenDeadline) => {
                let ahead = token.expires_at - at;
                assert!(ahead >= S(300) && ahead <= S(390), "{ahead:?}");
            }
            other => panic!("{other:?}"),
        }
        // A token that outlives the renewal point does not get in the way of renewing.
        let far = TokenEnd {
            expires_at: now + S(100_000),
            ttl: S(100_000),
        };
        assert!(matches!(
            plan(now, &lease, Some(far), None, &mut rng()),
            Next::Renew(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn cadence_wins_when_earlier() {
        let now = Instant::now();
        let lease = Lease::issued(now, S(3600), true);
        assert_eq!(
            plan(now, &lease, None, Some(S(300)), &mut rng()),
            Next::Reissue(now + S(300), Why::Cadence)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn non_renewable_and_expired_leases() {
        let now = Instant::now();
        let lease = Lease::issued(now, S(90), false);
        let next = plan(now, &lease, None, None, &mut rng());
        assert!(matches!(next, Next::Reissue(_, Why::Deadline)));
        assert!(next.at() >= now + S(51) && next.at() <= now + S(60));
        // Past the re-issue point: now, never in the past.
        let late = now + S(89);
        assert_eq!(
            plan(late, &lease, None, None, &mut rng()),
            Next::Reissue(late, Why::Deadline)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn following_the_plan_never_lets_the_credential_lapse() {
        // Simulate a role with ttl 30s and max_ttl 100s: Vault grants min(30, left to max).
        let mut r = rng();
        let t0 = Instant::now();
        let max_end = t0 + S(100);
        let mut lease = Lease::issued(t0, S(30), true);
        let mut now = t0;
        loop {
            match plan(now, &lease, None, None, &mut r) {
                Next::Renew(at) => {
                    assert!(at < lease.expires_at);
                    now = at;
                    let granted = S(30).min(max_end - now);
                    lease.renewed(now, S(30), granted, true);
                }
                Next::Reissue(at, why) => {
                    assert_eq!(why, Why::Deadline);
                    assert!(
                        at + S(9) < max_end,
                        "re-issue at {:?} leaves too little overlap",
                        at - t0
                    );
                    assert!(at >= t0 + S(60), "re-issued too early: {:?}", at - t0);
                    break;
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_past_its_end_is_replaced_not_renewed() {
        // Renewals failed (Vault sealed) until the lease ran out: renewing it again is futile.
        let t0 = Instant::now();
        let lease = Lease::issued(t0, S(240), true);
        let later = t0 + S(400);
        assert_eq!(
            plan(later, &lease, None, None, &mut rng()),
            Next::Reissue(later, Why::Deadline)
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_caps_and_honours_retry_after() {
        let mut r = rng();
        let mut b = Backoff::new(S(1), S(300));
        let d: Vec<Duration> = (0..12).map(|_| b.next_delay(None, &mut r)).collect();
        assert!(d[0] >= Duration::from_millis(750) && d[0] <= S(1));
        assert!(d[3] >= S(6) && d[3] <= S(8));
        assert!(d[11] >= S(225) && d[11] <= S(300));
        assert!(b.next_delay(Some(S(30)), &mut r) >= S(30));
        b.reset();
        assert!(
            b.next_delay(Some(S(30)), &mut r) >= S(30),
            "Retry-After beats a short backoff"
        );
        b.reset();
        assert!(b.next_delay(None, &mut r) <= S(1));
    }

    #[test]
    fn splay_is_bounded() {
        let mut r = rng();
        assert_eq!(splay(Duration::ZERO, &mut r), Duration::ZERO);
        for _ in 0..100 {
            assert!(splay(S(5), &mut r) < S(5));
        }
    }
}
