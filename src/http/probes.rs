//! The probe listener's routes: kubelet's `/health` and `/ready`, `/metrics`, `/status` and
//! the status page.

use super::router::{Reply, Request, Route, Router};

const GET: &[&str] = &["GET", "HEAD"];

pub(super) const ROUTES: &[Route] = &[
    Route::exact("/health", GET, health),
    Route::exact("/ready", GET, ready),
    Route::exact("/metrics", GET, metrics),
    Route::exact("/status", GET, status_json),
    Route::exact("/", GET, status_page),
    Route::exact("/status.html", GET, status_page),
];

/// Liveness never asks Vault: restarting the agent cannot fix Vault, and restart storms hurt.
fn health(router: &Router, _: &Request, _: &str) -> Reply {
    match router.state().alive() {
        Ok(()) => Reply::json(200, serde_json::json!({ "status": "ok" })),
        Err(reason) => Reply::json(
            503,
            serde_json::json!({ "status": "unhealthy", "reason": reason }),
        ),
    }
}

fn ready(router: &Router, _: &Request, _: &str) -> Reply {
    match router.state().ready(crate::time::wall_now()) {
        Ok(()) => Reply::json(200, serde_json::json!({ "status": "ready" })),
        Err(reason) => Reply::json(
            503,
            serde_json::json!({ "status": "not ready", "reason": reason }),
        ),
    }
}

fn metrics(router: &Router, _: &Request, _: &str) -> Reply {
    match crate::metrics::encode(
        router.state(),
        router.vault_requests(),
        crate::time::wall_now(),
    ) {
        Ok(text) => Reply::with_type(200, crate::metrics::CONTENT_TYPE, text.into_bytes()),
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            Reply::json(
                500,
                serde_json::json!({ "status": "cannot encode metrics" }),
            )
        }
    }
}

fn status_json(router: &Router, _: &Request, _: &str) -> Reply {
    let report = crate::status::report(
        router.state(),
        crate::time::wall_now(),
        router.status_options(),
    );
    match serde_json::to_value(&report) {
        Ok(body) => Reply::json(200, body),
        Err(error) => {
            tracing::error!(%error, "cannot encode /status");
            Reply::json(500, serde_json::json!({ "status": "cannot encode status" }))
        }
    }
}

fn status_page(router: &Router, _: &Request, _: &str) -> Reply {
    let report = crate::status::report(
        router.state(),
        crate::time::wall_now(),
        router.status_options(),
    );
    let html = match crate::status::page(&report) {
        Ok(html) => html,
        Err(error) => {
            tracing::error!(%error, "cannot render the status page");
            return Reply::json(
                500,
                serde_json::json!({ "status": "cannot render the page" }),
            );
        }
    };
    let mut reply = Reply::with_type(200, "text/html; charset=utf-8", html.into_bytes());
    // The page needs nothing but its own inline style: forbid everything else, framing too.
    reply.headers.extend([
        (
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'".into(),
        ),
        ("X-Content-Type-Options", "nosniff".into()),
        ("Referrer-Policy", "no-referrer".into()),
    ]);
    reply
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::super::testing::{body, router};
    use super::*;
    use crate::state::{EventKind, State};
    use crate::status::StatusOptions;

    #[test]
    fn ready_follows_state() {
        let (router, state) = router();
        let reply = router.route("GET", "/ready");
        assert_eq!(reply.status, 503);
        assert_eq!(
            body(&reply)["reason"],
            "secret \"db\": no credential written yet"
        );
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));

        state.record("db", EventKind::Written, "");
        state.update("db", |s| {
            s.expires_at = Some(SystemTime::now() + Duration::from_secs(3600))
        });
        let reply = router.route("GET", "/ready?verbose=1");
        assert_eq!(
            (reply.status, body(&reply)),
            (200, serde_json::json!({ "status": "ready" }))
        );

        state.update("db", |s| {
            s.expires_at = Some(SystemTime::now() - Duration::from_secs(1))
        });
        let reply = router.route("GET", "/ready");
        assert_eq!(reply.status, 503);
        assert_eq!(body(&reply)["status"], "not ready");
        assert!(body(&reply)["reason"]
            .as_str()
            .unwrap()
            .contains("expired at"));
    }

    #[test]
    fn health_follows_task_liveness() {
        let (router, state) = router();
        assert_eq!(router.route("GET", "/health").status, 200);
        assert_eq!(
            body(&router.route("GET", "/health")),
            serde_json::json!({ "status": "ok" })
        );
        state.mark_task_alive("db", true);
        state.mark_task_alive("db", false);
        let reply = router.route("GET", "/health");
        assert_eq!(reply.status, 503);
        assert_eq!(
            body(&reply)["reason"],
            "secret \"db\": its task has stopped"
        );
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let (router, state) = router();
        state.record("db", EventKind::Renewed, "");
        let reply = router.route("GET", "/metrics");
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = String::from_utf8(reply.body).unwrap();
        assert!(
            text.contains("vault_rotator_secret_renewals_total{secret=\"db\"} 1\n"),
            "{text}"
        );
    }

    fn credential(state: &State) -> SystemTime {
        let expires = SystemTime::now() + Duration::from_secs(600);
        state.update("db", |s| {
            s.username = Some("v-app-Abc".into());
            s.lease_id = Some("database/creds/app/LEASE-ID".into());
            s.expires_at = Some(expires);
        });
        state.record_credential(
            "db",
            EventKind::Issued,
            Some("v-app-Abc".into()),
            Some("database/creds/app/LEASE-ID".into()),
            "first credential",
        );
        state.record_revoked("db", "database/creds/app/LEASE-ID");
        state.record_failure("db", "fetch", "fetch: <b>HTTP 500</b> & more");
        expires
    }

    #[test]
    fn status_reports_each_secret_without_lease_ids() {
        let (router, state) = router();
        let expires = credential(&state);
        let reply = router.route("GET", "/status");
        assert_eq!(reply.status, 200);
        let json = body(&reply);
        let db = &json["secrets"][0];
        assert_eq!(db["name"], "db");
        assert_eq!(db["username"], "v-app-Abc");
        assert_eq!(db["leased"], true);
        assert_eq!(
            db["expires_at"],
            crate::time::rfc3339(expires).unwrap().as_str()
        );
        let left = db["seconds_left"].as_i64().unwrap();
        assert!((598..=600).contains(&left), "{left}");
        assert_eq!(db["failures_by_stage"]["fetch"], 1);
        let kinds: Vec<&str> = db["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["issued", "revoked", "failed"]);
        assert_eq!(
            db["history"][1]["username"], "v-app-Abc",
            "revocation names the user"
        );
        assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(json["ready"], false);
        let text = json.to_string();
        assert!(!text.contains("LEASE-ID"), "{text}");
    }

    #[test]
    fn hidden_usernames_leave_status_and_page_entirely() {
        let state = router().1;
        credential(&state);
        let router = Router::probes(
            state,
            Default::default(),
            StatusOptions {
                hide_usernames: true,
            },
        );
        for path in ["/status", "/", "/status.html"] {
            let reply = router.route("GET", path);
            let text = String::from_utf8(reply.body).unwrap();
            assert!(!text.contains("v-app-Abc"), "{path}: {text}");
            assert!(!text.contains("LEASE-ID"), "{path}: {text}");
        }
        assert_eq!(
            body(&router.route("GET", "/status"))["usernames_hidden"],
            true
        );
    }

    #[test]
    fn page_is_self_contained_escaped_html_with_a_lifetime_bar() {
        let (router, state) = router();
        credential(&state);
        let reply = router.route("GET", "/");
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(reply
            .header("content-security-policy")
            .is_some_and(|c| c.starts_with("default-src 'none'")));
        let html = String::from_utf8(reply.body).unwrap();
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(html.contains("v-app-Abc"));
        // Escaped, whichever escaper is used (minijinja's also escapes `/`).
        assert!(html.contains("&lt;b&gt;HTTP 500&lt;"), "{html}");
        assert!(html.contains("&gt; &amp; more"), "{html}");
        assert!(!html.contains("<b>HTTP") && !html.contains("</b>"));
        assert!(
            !html.contains("<script") && !html.contains("src="),
            "no script, no assets"
        );
        // 600 s left of a 600 s lifetime: a full bar.
        assert!(html.contains("style=\"width:100.0%\""), "{html}");
        assert_eq!(router.route("GET", "/status.html").body, html.into_bytes());
    }
}
