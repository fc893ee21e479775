use super::records::DETAIL_MAX;
use super::*;
use crate::credential::SecretKind;
use std::time::{Duration, UNIX_EPOCH};

fn info(name: &str) -> SecretInfo {
    SecretInfo {
        name: name.into(),
        path: format!("database/creds/{name}"),
        kind: SecretKind::Dynamic,
    }
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn written(state: &State, name: &str, expires: Option<SystemTime>) {
    state.record_at(name, EventKind::Written, "db.json", at(1_000));
    state.update(name, |s| s.expires_at = expires);
}

#[test]
fn ready_requires_every_secret_written() {
    let state = State::new(vec![info("db"), info("cache")]);
    assert_eq!(
        state.ready(at(2_000)).unwrap_err(),
        "secret \"db\": no credential written yet"
    );
    written(&state, "db", None);
    assert_eq!(
        state.ready(at(2_000)).unwrap_err(),
        "secret \"cache\": no credential written yet"
    );
    written(&state, "cache", Some(at(3_000)));
    assert_eq!(state.ready(at(2_000)), Ok(()));
}

#[test]
fn ready_fails_once_expired() {
    let state = State::new(vec![info("db")]);
    written(&state, "db", Some(at(1_795_654_923)));
    assert_eq!(state.ready(at(1_795_654_922)), Ok(()));
    assert_eq!(
        state.ready(at(1_795_654_923)).unwrap_err(),
        "secret \"db\": credential expired at 2026-11-26T01:02:03Z"
    );
}

#[test]
fn removed_secret_no_longer_gates_readiness() {
    let state = State::new(vec![info("db"), info("old")]);
    written(&state, "db", None);
    state.remove_secret("old");
    assert_eq!(state.ready(at(2_000)), Ok(()));
    state.update("old", |s| s.failures = 99);
    assert_eq!(state.snapshot().len(), 1);
}

#[test]
fn add_secret_keeps_status_of_a_known_name() {
    let state = State::new(vec![info("db")]);
    state.record("db", EventKind::Renewed, "1h");
    state.add_secret(SecretInfo {
        kind: SecretKind::Static,
        ..info("db")
    });
    state.add_secret(info("new"));
    let snap = state.snapshot();
    assert_eq!((snap[0].renewals, snap[0].kind), (1, SecretKind::Static));
    assert_eq!(snap[1].name, "new");
}

#[test]
fn record_keeps_counters_in_step() {
    let state = State::new(vec![info("db")]);
    state.record_at("db", EventKind::Issued, "v-1", at(10));
    state.record_at("db", EventKind::Written, "", at(11));
    state.record_at("db", EventKind::Renewed, "", at(12));
    state.record_at("db", EventKind::Rotated, "v-2", at(13));
    state.record_at("db", EventKind::Failed, "renew: 503", at(14));
    state.record_at("db", EventKind::Revoked, "lease", at(15));
    let s = state.get("db").unwrap();
    assert_eq!((s.renewals, s.rotations, s.failures), (1, 1, 1));
    assert_eq!(s.written_at, Some(at(11)));
    assert_eq!(s.last_rotation, Some(at(13)));
    assert_eq!(s.last_error.as_deref(), Some("renew: 503"));
    let kinds: Vec<EventKind> = s.history.iter().map(|e| e.kind).collect();
    use EventKind::*;
    assert_eq!(kinds, [Issued, Written, Renewed, Rotated, Failed, Revoked]);
}

#[test]
fn notify_results_have_their_own_counters() {
    let state = State::new(vec![info("db")]);
    state.notify_result("db", "exec", true);
    state.notify_result("db", "http", false);
    let s = state.get("db").unwrap();
    assert_eq!((s.notifications, s.notify_failures, s.failures), (1, 1, 0));
    assert_eq!(s.history[1].detail, "http hook failed");
    assert_eq!(s.history[1].kind, EventKind::NotifyFailed);
}

#[test]
fn failures_are_counted_by_stage() {
    let state = State::new(vec![info("db")]);
    state.record_failure("db", "renew", "renew: HTTP 500");
    state.record_failure("db", "renew", "renew: HTTP 502");
    state.record_failure("db", "auth", "auth: HTTP 400");
    state.record("db", EventKind::Failed, "no stage");
    let s = state.get("db").unwrap();
    assert_eq!(s.failures, 4);
    assert_eq!(s.failures_by_stage.get("renew"), Some(&2));
    assert_eq!(s.failures_by_stage.get("auth"), Some(&1));
    assert_eq!(s.history[2].stage, Some("auth"));
    assert_eq!(s.last_error.as_deref(), Some("no stage"));
}

#[test]
fn revocation_names_the_user_its_lease_was_issued_to() {
    let state = State::new(vec![info("db")]);
    state.record_credential(
        "db",
        EventKind::Issued,
        Some("v-1".into()),
        Some("l/1".into()),
        "first",
    );
    state.record_credential(
        "db",
        EventKind::Rotated,
        Some("v-2".into()),
        Some("l/2".into()),
        "cadence",
    );
    state.record_revoked("db", "l/1");
    state.record_revoked("db", "l/unknown");
    let s = state.get("db").unwrap();
    assert_eq!(s.history[2].username.as_deref(), Some("v-1"));
    assert_eq!(s.history[3].username, None);
    assert_eq!(s.rotations, 1);
    let json = serde_json::to_string(&s.history).unwrap();
    assert!(
        !json.contains("l/1") && !json.contains("lease_id"),
        "{json}"
    );
}

#[test]
fn rotation_requests_reach_the_current_handle() {
    let state = State::new(vec![info("db"), info("kv")]);
    assert_eq!(state.request_rotation(Some("nope")), None);
    assert_eq!(
        state.request_rotation(None),
        Some(vec![]),
        "no worker running yet"
    );
    let old = Arc::new(Notify::new());
    state.set_rotate_handle("db", old.clone());
    // A reload restarts the worker with a new handle.
    let new = Arc::new(Notify::new());
    state.set_rotate_handle("db", new.clone());
    state.set_rotate_handle("kv", Arc::new(Notify::new()));
    assert_eq!(
        state.request_rotation(Some("db")),
        Some(vec!["db".to_string()])
    );
    assert_eq!(
        state.request_rotation(None),
        Some(vec!["db".to_string(), "kv".to_string()])
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let woken = |n: &Notify| {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(1), n.notified())
                .await
                .is_ok()
        })
    };
    assert!(woken(&new));
    assert!(!woken(&old), "the stopped worker's handle is dropped");
    state.remove_secret("db");
    assert_eq!(state.request_rotation(Some("db")), None);
}

#[test]
fn a_new_expiry_starts_a_new_lifetime() {
    let state = State::new(vec![info("db")]);
    state.update("db", |s| s.renewable = true);
    assert_eq!(state.get("db").unwrap().expiry_set_at, None);
    state.update("db", |s| s.expires_at = Some(at(5_000)));
    let first = state.get("db").unwrap().expiry_set_at.unwrap();
    state.update("db", |s| s.renewals += 0);
    assert_eq!(state.get("db").unwrap().expiry_set_at, Some(first));
    std::thread::sleep(Duration::from_millis(2));
    state.update("db", |s| s.expires_at = Some(at(6_000)));
    assert!(state.get("db").unwrap().expiry_set_at.unwrap() > first);
}

#[test]
fn declared_hooks_start_at_zero_and_count_apart() {
    let state = State::new(vec![info("db")]);
    state.declare_hooks("db", &["exec", "http"]);
    state.notify_result("db", "http", false);
    state.declare_hooks("db", &["exec", "http"]);
    let s = state.get("db").unwrap();
    assert_eq!(s.notifications_by_hook["exec"], HookCounts::default());
    assert_eq!(
        s.notifications_by_hook["http"],
        HookCounts { ok: 0, failed: 1 }
    );
}

#[test]
fn history_is_bounded_and_details_truncated() {
    let state = State::new(vec![info("db")]);
    for i in 0..(HISTORY_LEN + 7) {
        state.record_at("db", EventKind::Renewed, format!("#{i}"), at(i as u64));
    }
    state.record("db", EventKind::Failed, "é".repeat(DETAIL_MAX * 2));
    let s = state.get("db").unwrap();
    assert_eq!(s.history.len(), HISTORY_LEN);
    assert_eq!(s.history[0].detail, "#8");
    assert_eq!(
        s.history.back().unwrap().detail.chars().count(),
        DETAIL_MAX + 1
    );
    assert_eq!(s.renewals, (HISTORY_LEN + 7) as u64);
}

#[test]
fn serializes_times_as_rfc3339_and_no_secret_fields() {
    let state = State::new(vec![info("db")]);
    state.update("db", |s| {
        s.expires_at = Some(at(1_795_654_923));
        s.next_action = Some(NextAction {
            what: "renew".into(),
            at: at(1_795_654_000),
        });
    });
    state.record_at("db", EventKind::Issued, "v-1", at(1_795_650_000));
    let json = serde_json::to_value(state.snapshot()).unwrap();
    assert_eq!(json[0]["expires_at"], "2026-11-26T01:02:03Z");
    assert_eq!(json[0]["written_at"], serde_json::Value::Null);
    assert_eq!(json[0]["next_action"]["at"], "2026-11-26T00:46:40Z");
    assert_eq!(json[0]["history"][0]["kind"], "issued");
    assert_eq!(json[0]["kind"], "dynamic");
    let keys: Vec<&String> = json[0].as_object().unwrap().keys().collect();
    assert!(
        !keys
            .iter()
            .any(|k| k.contains("password") || k.contains("token")),
        "{keys:?}"
    );
}

#[test]
fn task_liveness_counts_overlapping_tasks() {
    let state = State::new(vec![info("db")]);
    assert_eq!(state.alive(), Ok(()), "not started yet is not dead");
    state.mark_task_alive("db", true);
    // Reload: the new task starts before the old one reports its exit.
    state.mark_task_alive("db", true);
    state.mark_task_alive("db", false);
    assert_eq!(state.alive(), Ok(()));
    state.mark_task_alive("db", false);
    assert_eq!(
        state.alive().unwrap_err(),
        "secret \"db\": its task has stopped"
    );
}

#[test]
fn task_guard_reports_a_panicking_task() {
    let state = State::new(vec![info("db")]);
    let s = state.clone();
    let joined = std::thread::spawn(move || {
        let _guard = s.task_guard("db");
        assert_eq!(s.alive(), Ok(()));
        panic!("task failed");
    })
    .join();
    assert!(joined.is_err());
    assert!(state.alive().is_err());
}

#[test]
fn auth_events_are_counted() {
    let state = State::new(vec![]);
    state.auth_event(AuthCount::Login);
    state.auth_event(AuthCount::Login);
    state.auth_event(AuthCount::RenewFailed);
    let c = state.auth_counters();
    assert_eq!(
        (c.logins, c.token_renew_failures, c.login_failures),
        (2, 1, 0)
    );
}

#[test]
fn liveness_answers_while_the_runtime_runs() {
    let state = State::new(vec![info("db")]);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    state.set_liveness(tx);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        tokio::spawn(serve_liveness(rx));
        // The probe blocks, as on the HTTP thread; the runtime answers meanwhile.
        let s = state.clone();
        tokio::task::spawn_blocking(move || s.alive_within(Duration::from_secs(30)))
            .await
            .unwrap()
    });
    assert_eq!(result, Ok(()));
}

#[test]
fn liveness_fails_when_the_loop_does_not_answer() {
    let state = State::new(vec![info("db")]);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    state.set_liveness(tx);
    // Nobody serves `rx`: the first ping times out, the next finds the queue full.
    let err = state.alive_within(Duration::from_millis(1)).unwrap_err();
    assert!(err.contains("did not answer"), "{err}");
    let err = state.alive_within(Duration::from_millis(1)).unwrap_err();
    assert!(err.contains("not answering"), "{err}");
    drop(rx);
    let err = state.alive_within(Duration::from_millis(1)).unwrap_err();
    assert!(err.contains("stopped"), "{err}");
}

#[test]
fn retired_credentials_count_by_how_and_keep_the_last() {
    let state = State::new(vec![info("db")]);
    let s = state.get("db").unwrap();
    assert_eq!(
        s.revokes_by_how.values().copied().collect::<Vec<_>>(),
        vec![0, 0, 0],
        "every label from the start"
    );
    state.record_credential(
        "db",
        EventKind::Issued,
        Some("v-1".into()),
        Some("l/1".into()),
        "first",
    );
    state.record_retired(
        "db",
        "l/1",
        RevokeHow::Drained,
        Duration::from_millis(7_260),
    );
    state.record_retired(
        "db",
        "l/x",
        RevokeHow::CheckFailed,
        Duration::from_secs(300),
    );
    state.record_revoked("db", "l/y");
    let s = state.get("db").unwrap();
    assert_eq!(s.revokes_by_how["drained"], 1);
    assert_eq!(s.revokes_by_how["check_failed"], 1);
    assert_eq!(
        s.revokes_by_how["grace"], 0,
        "a plain revoke is no retirement"
    );
    let last = s.last_revoke.expect("recorded");
    assert_eq!(
        (last.how, last.drain_seconds),
        (RevokeHow::CheckFailed, 300.0)
    );
    let drained = s
        .history
        .iter()
        .find(|e| e.detail.contains("drained"))
        .expect("event");
    assert_eq!(drained.detail, "lease revoked: drained after 7.3 s");
    assert_eq!(drained.username.as_deref(), Some("v-1"));
}
