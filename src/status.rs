//! `GET /status` (JSON) and the status page (`GET /`): what each credential is, when it
//! expires, what the agent does next, and the rotation activity log.
//!
//! Built from a [`State`] snapshot per request. Never a password, token, secret id or lease
//! id: the report has no field for them (lease ids are reduced to `leased: true`), and
//! usernames go too with `--status-hide-usernames`. The page is one self-contained HTML
//! document rendered from `status.html` (compiled in) by minijinja with HTML auto-escaping:
//! no external assets, no script, every dynamic text escaped.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::credential::SecretKind;
use crate::state::{AuthCounters, Event, HookCounts, OutputSet, RevokeHow, SecretStatus, State};

/// Seconds between automatic reloads of the status page.
const PAGE_REFRESH_SECS: u32 = 5;

/// What the status endpoints may show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusOptions {
    /// `--status-hide-usernames`: no database username anywhere in the report.
    pub hide_usernames: bool,
}

/// The whole `/status` document.
#[derive(Debug, Serialize)]
pub struct Report {
    pub version: &'static str,
    pub now: Option<String>,
    pub started_at: Option<String>,
    pub uptime_seconds: u64,
    /// Same verdict as `/ready`, and its reason when not ready.
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_ready_reason: Option<String>,
    pub usernames_hidden: bool,
    pub auth: AuthCounters,
    pub secrets: Vec<SecretReport>,
}

/// One secret in the report.
#[derive(Debug, Serialize)]
pub struct SecretReport {
    pub name: String,
    pub path: String,
    pub kind: SecretKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Whether the credential has a Vault lease; the lease id itself is left out.
    pub leased: bool,
    pub expires_at: Option<String>,
    /// Negative once expired.
    pub seconds_left: Option<i64>,
    /// Length of the current lifetime (from the issue or last renewal to `expires_at`): what
    /// the page's bar is a fraction of.
    pub lifetime_seconds: Option<u64>,
    pub renewable: bool,
    pub written_at: Option<String>,
    pub last_rotation: Option<String>,
    pub next_action: Option<NextReport>,
    pub rotations: u64,
    pub renewals: u64,
    pub failures: u64,
    pub failures_by_stage: BTreeMap<&'static str, u64>,
    pub notifications: u64,
    pub notify_failures: u64,
    pub notifications_by_hook: BTreeMap<String, HookCounts>,
    pub last_error: Option<String>,
    /// With `--output-dir`: the directory, its files and the generation `..data` names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<OutputSet>,
    /// The `--drain-check` URL (no secret in it), when configured.
    pub drain_check: Option<String>,
    /// Old credentials revoked after a rotation: `drained`, `grace`, `check_failed`.
    pub revokes_by_how: BTreeMap<&'static str, u64>,
    /// The last of them: how it was revoked and how long the app took to leave it.
    pub last_revoke: Option<RevokeReport>,
    /// The activity log, oldest first (bounded; see [`crate::state::HISTORY_LEN`]).
    pub history: Vec<Event>,
}

/// How the last old credential was revoked.
#[derive(Debug, Serialize)]
pub struct RevokeReport {
    pub how: RevokeHow,
    /// From the new credential's write to the revoke, in seconds (one decimal).
    pub drain_seconds: f64,
    pub at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct NextReport {
    pub what: String,
    pub at: Option<String>,
    pub in_seconds: i64,
}

/// The report as of `now`.
pub fn report(state: &State, now: SystemTime, opts: StatusOptions) -> Report {
    let ready = state.ready(now);
    let started = state.started_at();
    Report {
        version: env!("CARGO_PKG_VERSION"),
        now: crate::time::rfc3339(now),
        started_at: crate::time::rfc3339(started),
        uptime_seconds: now.duration_since(started).map_or(0, |d| d.as_secs()),
        ready: ready.is_ok(),
        not_ready_reason: ready.err(),
        usernames_hidden: opts.hide_usernames,
        auth: state.auth_counters(),
        secrets: state
            .snapshot()
            .into_iter()
            .map(|s| secret_report(s, now, opts))
            .collect(),
    }
}

fn secret_report(s: SecretStatus, now: SystemTime, opts: StatusOptions) -> SecretReport {
    let time = |t: Option<SystemTime>| t.and_then(crate::time::rfc3339);
    let lifetime = match (s.expiry_set_at, s.expires_at) {
        (Some(from), Some(to)) => to.duration_since(from).ok().map(|d| d.as_secs()),
        _ => None,
    };
    let mut history: Vec<Event> = s.history.into_iter().collect();
    let username = if opts.hide_usernames {
        for event in &mut history {
            event.username = None;
        }
        None
    } else {
        s.username
    };
    SecretReport {
        name: s.name,
        path: s.path,
        kind: s.kind,
        username,
        leased: s.lease_id.is_some(),
        expires_at: time(s.expires_at),
        seconds_left: s.expires_at.map(|at| seconds_between(now, at)),
        lifetime_seconds: lifetime,
        renewable: s.renewable,
        written_at: time(s.written_at),
        last_rotation: time(s.last_rotation),
        next_action: s.next_action.map(|n| NextReport {
            at: crate::time::rfc3339(n.at),
            in_seconds: seconds_between(now, n.at),
            what: n.what,
        }),
        rotations: s.rotations,
        renewals: s.renewals,
        failures: s.failures,
        failures_by_stage: s.failures_by_stage,
        notifications: s.notifications,
        notify_failures: s.notify_failures,
        notifications_by_hook: s.notifications_by_hook,
        last_error: s.last_error,
        output_dir: s.output_set,
        drain_check: s.drain_check,
        revokes_by_how: s.revokes_by_how,
        last_revoke: s.last_revoke.map(|r| RevokeReport {
            how: r.how,
            drain_seconds: r.drain_seconds,
            at: crate::time::rfc3339(r.at),
            username: r.username.filter(|_| !opts.hide_usernames),
        }),
        history,
    }
}

/// Whole seconds from `from` to `to`, negative when `to` is earlier.
fn seconds_between(from: SystemTime, to: SystemTime) -> i64 {
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    match to.duration_since(from) {
        Ok(d) => secs(d),
        Err(e) => -secs(e.duration()),
    }
}

/// The page's template, compiled into the binary. Its name ends in `.html`, which turns on
/// minijinja's HTML auto-escaping for every value it prints.
const PAGE_TEMPLATE: (&str, &str) = ("status.html", include_str!("status.html"));

/// What the page prints, worked out here so the template holds only markup.
#[derive(Serialize)]
struct PageView<'a> {
    refresh_secs: u32,
    version: &'a str,
    ready: bool,
    not_ready_reason: Option<&'a str>,
    uptime: String,
    started: &'a str,
    auth: &'a AuthCounters,
    secrets: Vec<SecretView<'a>>,
}

#[derive(Serialize)]
struct SecretView<'a> {
    name: &'a str,
    path: &'a str,
    kind: &'a str,
    username: Option<&'a str>,
    expiry: Option<ExpiryView<'a>>,
    next: Option<NextView<'a>>,
    rotations: u64,
    renewals: u64,
    failures: u64,
    notifications: u64,
    notify_failures: u64,
    last_rotation: Option<&'a str>,
    last_error: Option<&'a str>,
    output_dir: Option<&'a OutputSet>,
    drain_check: Option<&'a str>,
    /// "drained after 7.3 s at 2026-..." for the last old credential revoked.
    last_revoke: Option<String>,
    /// "2 drained, 1 at the grace, 0 after a failed check".
    revokes: String,
    /// Newest first.
    history: Vec<EventView<'a>>,
}

#[derive(Serialize)]
struct ExpiryView<'a> {
    at: &'a str,
    /// "5m 2s left" or "expired 3s ago".
    left: String,
    bar: Option<BarView>,
}

/// The remaining fraction of the current lifetime.
#[derive(Serialize)]
struct BarView {
    class: &'static str,
    /// One decimal, for the width.
    percent: String,
    /// Whole percent, for the tooltip.
    percent_whole: String,
    lifetime: String,
}

#[derive(Serialize)]
struct NextView<'a> {
    what: &'a str,
    at: &'a str,
    #[serde(rename = "in")]
    in_: String,
}

#[derive(Serialize)]
struct EventView<'a> {
    at: String,
    kind: String,
    detail: &'a str,
    username: Option<&'a str>,
}

/// The status page: the report at a glance, reloading itself every few seconds.
pub fn page(report: &Report) -> Result<String, minijinja::Error> {
    let view = PageView {
        refresh_secs: PAGE_REFRESH_SECS,
        version: report.version,
        ready: report.ready,
        not_ready_reason: report.not_ready_reason.as_deref(),
        uptime: human_secs(i64::try_from(report.uptime_seconds).unwrap_or(i64::MAX)),
        started: report.started_at.as_deref().unwrap_or("?"),
        auth: &report.auth,
        secrets: report.secrets.iter().map(secret_view).collect(),
    };
    let (name, source) = PAGE_TEMPLATE;
    let mut env = minijinja::Environment::new();
    // Block tags on lines of their own leave no blank lines behind.
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.render_named_str(name, source, view)
}

fn secret_view(s: &SecretReport) -> SecretView<'_> {
    SecretView {
        name: &s.name,
        path: &s.path,
        kind: s.kind.as_str(),
        username: s.username.as_deref(),
        expiry: expiry_view(s),
        next: s.next_action.as_ref().map(|n| NextView {
            what: &n.what,
            at: n.at.as_deref().unwrap_or("?"),
            in_: human_secs(n.in_seconds),
        }),
        rotations: s.rotations,
        renewals: s.renewals,
        failures: s.failures,
        notifications: s.notifications,
        notify_failures: s.notify_failures,
        last_rotation: s.last_rotation.as_deref(),
        last_error: s.last_error.as_deref(),
        output_dir: s.output_dir.as_ref(),
        drain_check: s.drain_check.as_deref(),
        last_revoke: s.last_revoke.as_ref().map(|r| {
            let how = match r.how {
                RevokeHow::Drained => "drained after",
                RevokeHow::Grace => "at the grace, after",
                RevokeHow::CheckFailed => "at the grace (drain check failed), after",
            };
            format!(
                "{how} {:.1} s, {}",
                r.drain_seconds,
                r.at.as_deref().unwrap_or("?")
            )
        }),
        revokes: format!(
            "{} drained, {} at the grace, {} after a failed check",
            s.revokes_by_how.get("drained").copied().unwrap_or(0),
            s.revokes_by_how.get("grace").copied().unwrap_or(0),
            s.revokes_by_how.get("check_failed").copied().unwrap_or(0)
        ),
        history: s
            .history
            .iter()
            .rev()
            .map(|e| EventView {
                at: crate::time::rfc3339(e.at).unwrap_or_default(),
                kind: e.kind.to_string(),
                detail: &e.detail,
                username: e.username.as_deref(),
            })
            .collect(),
    }
}

fn expiry_view(s: &SecretReport) -> Option<ExpiryView<'_>> {
    let (Some(at), Some(left)) = (&s.expires_at, s.seconds_left) else {
        return None;
    };
    let bar = s.lifetime_seconds.filter(|l| *l > 0).map(|lifetime| {
        let percent = (left.max(0) as f64 * 100.0 / lifetime as f64).min(100.0);
        BarView {
            class: match percent {
                p if p <= 0.0 => "bar out",
                p if p < 25.0 => "bar low",
                _ => "bar",
            },
            percent: format!("{percent:.1}"),
            percent_whole: format!("{percent:.0}"),
            lifetime: human_secs(i64::try_from(lifetime).unwrap_or(i64::MAX)),
        }
    });
    Some(ExpiryView {
        at,
        left: if left >= 0 {
            format!("{} left", human_secs(left))
        } else {
            format!("expired {} ago", human_secs(-left))
        },
        bar,
    })
}

/// A short human duration: 45s, 12m 5s, 3h 20m, 2d 4h.
fn human_secs(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::state::{EventKind, SecretInfo};

    fn state(name: &str) -> std::sync::Arc<State> {
        State::new(vec![SecretInfo {
            name: name.into(),
            path: "database/creds/app".into(),
            kind: SecretKind::Dynamic,
        }])
    }

    #[test]
    fn page_says_why_it_is_not_ready_and_what_is_missing() {
        let state = state("db");
        let html = page(&report(&state, SystemTime::now(), StatusOptions::default())).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(
            html.contains("<p class=\"bad\">Not ready: secret &quot;db&quot;: no credential"),
            "{html}"
        );
        assert!(html.contains("<td>no expiry</td>"), "{html}");
        assert!(html.contains("nothing planned yet"), "{html}");
        assert!(!html.contains("Username"), "no user yet: {html}");
    }

    #[test]
    fn every_value_is_escaped_in_text_and_attributes() {
        let state = state("db\"><script>x</script>");
        let name = "db\"><script>x</script>";
        let now = SystemTime::now();
        state.update(name, |s| s.expires_at = Some(now + Duration::from_secs(60)));
        // Separately: a new expiry resets the lifetime's start to now.
        state.update(name, |s| {
            s.expiry_set_at = Some(now - Duration::from_secs(540))
        });
        state.record(name, EventKind::Written, "wrote <file>");
        let html = page(&report(&state, now, StatusOptions::default())).unwrap();
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("db&quot;&gt;&lt;script&gt;"), "{html}");
        assert!(html.contains("wrote &lt;file&gt;"), "{html}");
        // 60 s left of 600: a low bar, with its tooltip.
        assert!(
            html.contains("<div class=\"bar low\" title=\"10% of 10m 0s left\">"),
            "{html}"
        );
        assert!(html.contains("style=\"width:10.0%\""), "{html}");
    }

    #[test]
    fn an_output_set_shows_its_directory_files_and_generation() {
        let state = state("db");
        let now = SystemTime::now();
        let report_json = |state: &State| {
            serde_json::to_value(report(state, now, StatusOptions::default())).unwrap()
        };
        assert!(
            report_json(&state)["secrets"][0]
                .get("output_dir")
                .is_none(),
            "absent for a single file"
        );
        state.update("db", |s| {
            s.output_set = Some(OutputSet {
                dir: "/secrets/<db>".into(),
                files: vec!["password".into(), "username".into()],
                generation: Some("..2026_11_30_10_00_00.123456789".into()),
            })
        });
        let doc = report_json(&state);
        assert_eq!(
            doc["secrets"][0]["output_dir"],
            serde_json::json!({
                "dir": "/secrets/<db>",
                "files": ["password", "username"],
                "generation": "..2026_11_30_10_00_00.123456789",
            })
        );
        let html = page(&report(&state, now, StatusOptions::default())).unwrap();
        assert!(
            html.contains(
                "<code>&#x2f;secrets&#x2f;&lt;db&gt;</code>: <code>password</code>, <code>username</code>; \
                 <code>..data</code> &rarr; <code>..2026_11_30_10_00_00.123456789</code>"
            ),
            "{html}"
        );
    }

    #[test]
    fn the_last_revoke_is_shown_and_its_user_hidden_on_request() {
        let state = state("db");
        state.update("db", |s| {
            s.drain_check = Some("postgres://db:5432/app".into())
        });
        state.record_credential(
            "db",
            EventKind::Issued,
            Some("v-old".into()),
            Some("l/1".into()),
            "first",
        );
        state.record_retired(
            "db",
            "l/1",
            crate::state::RevokeHow::Drained,
            Duration::from_millis(7_260),
        );
        let now = SystemTime::now();
        let r = report(&state, now, StatusOptions::default());
        let json = serde_json::to_value(&r).unwrap();
        let s = &json["secrets"][0];
        assert_eq!(s["last_revoke"]["how"], "drained");
        assert_eq!(s["last_revoke"]["drain_seconds"], 7.3);
        assert_eq!(s["last_revoke"]["username"], "v-old");
        assert_eq!(s["revokes_by_how"]["drained"], 1);
        assert_eq!(s["drain_check"], "postgres://db:5432/app");
        let html = page(&r).unwrap();
        assert!(html.contains("revoked drained after 7.3 s"), "{html}");
        assert!(
            html.contains("1 drained, 0 at the grace, 0 after a failed check"),
            "{html}"
        );
        let hidden = report(
            &state,
            now,
            StatusOptions {
                hide_usernames: true,
            },
        );
        let json = serde_json::to_string(&hidden).unwrap();
        assert!(!json.contains("v-old"), "{json}");
    }
}
