//! `GET /status` (JSON) and the status page (`GET /`): what each credential is, when it
//! expires, what the agent does next, and the rotation activity log.
//!
//! Built from a [`State`] snapshot per request. Never a password, token, secret id or lease
//! id: the report has no field for them (lease ids are reduced to `leased: true`), and
//! usernames go too with `--status-hide-usernames`. The page is one self-contained HTML
//! document: no external assets, no script, every dynamic text HTML-escaped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::SystemTime;

use serde::Serialize;

use crate::credential::SecretKind;
use crate::state::{AuthCounters, Event, HookCounts, SecretStatus, State};

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
    /// The activity log, oldest first (bounded; see [`crate::state::HISTORY_LEN`]).
    pub history: Vec<Event>,
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
        now: crate::render::rfc3339(now),
        started_at: crate::render::rfc3339(started),
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
    let time = |t: Option<SystemTime>| t.and_then(crate::render::rfc3339);
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
            at: crate::render::rfc3339(n.at),
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

/// The status page: the report at a glance.
pub fn page(report: &Report) -> String {
    let mut html = String::with_capacity(8 * 1024);
    // Writing to a String cannot fail; the results are ignored on purpose below.
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{PAGE_REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>vault-rotator</title><style>{STYLE}</style></head><body>\n\
         <h1>vault-rotator <small>{version}</small></h1>\n\
         <p class=\"{ready_class}\">{ready}</p>\n\
         <p>Up {uptime} since {started}. Logins {logins} ({login_failures} failed), \
         token renewals {renewals} ({renew_failures} failed).</p>\n",
        version = esc(report.version),
        ready_class = if report.ready { "ok" } else { "bad" },
        ready = match &report.not_ready_reason {
            None => "Ready: every credential is written and unexpired.".to_string(),
            Some(reason) => format!("Not ready: {}", esc(reason)),
        },
        uptime = human_secs(report.uptime_seconds as i64),
        started = esc(report.started_at.as_deref().unwrap_or("?")),
        logins = report.auth.logins,
        login_failures = report.auth.login_failures,
        renewals = report.auth.token_renewals,
        renew_failures = report.auth.token_renew_failures,
    );
    for s in &report.secrets {
        secret_section(&mut html, s);
    }
    html.push_str("</body></html>\n");
    html
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1 small{font-weight:normal;color:#777;font-size:.6em}\
section{border:1px solid #ccc;border-radius:6px;padding:.5em 1em;margin:1em 0}\
table{border-collapse:collapse}td,th{text-align:left;padding:.15em .8em .15em 0;vertical-align:top}\
.bar{background:#eee;width:24em;max-width:100%;height:1em;border-radius:3px;overflow:hidden}\
.fill{height:100%;background:#3a3}.low .fill{background:#d90}.out .fill{background:#c33}\
.ok{color:#262}.bad{color:#b22}.failed,.notify_failed{color:#b22}\
.log td{font-size:.9em}code{font-size:.95em}";

fn secret_section(html: &mut String, s: &SecretReport) {
    let _ = write!(
        html,
        "<section><h2>{name}</h2>\n<table>\n<tr><th>Path</th><td><code>{path}</code> ({kind})</td></tr>\n",
        name = esc(&s.name),
        path = esc(&s.path),
        kind = esc(s.kind.as_str()),
    );
    if let Some(user) = &s.username {
        row(html, "Username", &format!("<code>{}</code>", esc(user)));
    }
    row(html, "Expires", &expiry_cell(s));
    let next = match &s.next_action {
        Some(n) => format!(
            "{} at {} (in {})",
            esc(&n.what),
            esc(n.at.as_deref().unwrap_or("?")),
            human_secs(n.in_seconds)
        ),
        None => "nothing planned yet".into(),
    };
    row(html, "Next", &next);
    row(
        html,
        "Counts",
        &format!(
            "{} rotations, {} renewals, {} failures, {} notifications ({} failed)",
            s.rotations, s.renewals, s.failures, s.notifications, s.notify_failures
        ),
    );
    if let Some(last) = &s.last_rotation {
        row(html, "Last rotation", &esc(last));
    }
    if let Some(err) = &s.last_error {
        row(
            html,
            "Last error",
            &format!("<span class=\"bad\">{}</span>", esc(err)),
        );
    }
    html.push_str("</table>\n<details open><summary>Activity</summary><table class=\"log\">\n");
    for e in s.history.iter().rev() {
        let who = e
            .username
            .as_deref()
            .map(|u| format!(" <code>{}</code>", esc(u)))
            .unwrap_or_default();
        let _ = writeln!(
            html,
            "<tr><td>{at}</td><td class=\"{kind}\">{kind}</td><td>{detail}{who}</td></tr>",
            at = esc(&crate::render::rfc3339(e.at).unwrap_or_default()),
            kind = esc(&e.kind.to_string()),
            detail = esc(&e.detail),
        );
    }
    html.push_str("</table></details></section>\n");
}

fn row(html: &mut String, header: &str, cell: &str) {
    let _ = writeln!(html, "<tr><th>{header}</th><td>{cell}</td></tr>");
}

/// The expiry with a bar of the remaining fraction of the current lifetime.
fn expiry_cell(s: &SecretReport) -> String {
    let (Some(at), Some(left)) = (&s.expires_at, s.seconds_left) else {
        return "no expiry".into();
    };
    let text = format!(
        "{} ({})",
        esc(at),
        if left >= 0 {
            format!("{} left", human_secs(left))
        } else {
            format!("expired {} ago", human_secs(-left))
        }
    );
    let Some(lifetime) = s.lifetime_seconds.filter(|l| *l > 0) else {
        return text;
    };
    let percent = (left.max(0) as f64 * 100.0 / lifetime as f64).min(100.0);
    let class = match percent {
        p if p <= 0.0 => "bar out",
        p if p < 25.0 => "bar low",
        _ => "bar",
    };
    format!(
        "<div class=\"{class}\" title=\"{percent:.0}% of {lifetime_text} left\">\
         <div class=\"fill\" style=\"width:{percent:.1}%\"></div></div>{text}",
        lifetime_text = human_secs(lifetime as i64),
    )
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

/// HTML-escapes text for element content and double-quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
