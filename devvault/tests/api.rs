//! Black-box API tests against the real devvault binary (no database).

mod common;

use std::time::Duration;

use common::{eventually, Dv, DENIED, INVALID_TOKEN, ROOT};
use serde_json::{json, Value};

fn keys_in_order(raw: &str) -> Vec<String> {
    // Top-level keys of a JSON object in wire order.
    let v: serde_json::Map<String, Value> = serde_json::from_str(raw).expect("object");
    let mut found: Vec<(usize, String)> = v
        .keys()
        .map(|k| {
            (
                raw.find(&format!("\"{k}\":")).expect("key on the wire"),
                k.clone(),
            )
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, k)| k).collect()
}

#[tokio::test]
async fn envelope_is_byte_exact() {
    let dv = Dv::start();
    dv.ok(
        "POST",
        "/v1/secret/data/app",
        Some(&json!({"data": {"b": "x<y>&z", "a": 1}})),
    )
    .await;
    let r = dv.root("GET", "/v1/secret/data/app", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert!(r.text.ends_with("}\n"), "trailing newline: {:?}", r.text);
    assert_eq!(
        keys_in_order(&r.text),
        [
            "request_id",
            "lease_id",
            "renewable",
            "lease_duration",
            "data",
            "wrap_info",
            "warnings",
            "auth",
            "mount_type"
        ]
    );
    assert!(
        r.text.contains(
            r#""data":{"data":{"a":1,"b":"x\u003cy\u003e\u0026z"},"metadata":{"created_time":""#
        ),
        "{}",
        r.text
    );
    assert!(r.text.contains(r#""custom_metadata":null,"deletion_time":"","destroyed":false,"version":1}},"wrap_info":null,"warnings":null,"auth":null,"mount_type":"kv"}"#), "{}", r.text);

    // Bad token and ACL texts.
    let r = dv
        .call("GET", "/v1/secret/data/app", Some("nope"), None)
        .await;
    assert_eq!((r.status, r.text.as_str()), (403, "{\"errors\":[\"2 errors occurred:\\n\\t* permission denied\\n\\t* invalid token\\n\\n\"]}\n"));
    let r = dv.call("GET", "/v1/secret/data/app", None, None).await;
    assert_eq!((r.status, r.errors()), (403, vec![DENIED.to_string()]));

    // Bearer auth, PUT == POST, LIST == ?list=true, namespace echo.
    let r = dv
        .call_h(
            "PUT",
            "/v1/secret/data/other",
            None,
            Some(&json!({"data": {"k": "v"}})),
            &[
                ("Authorization", "Bearer root"),
                ("X-Vault-Namespace", "ns1/"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-vault-namespace").as_deref(), Some("ns1/"));
    let a = dv.root("LIST", "/v1/secret/metadata/", None).await;
    let b = dv.root("GET", "/v1/secret/metadata?list=true", None).await;
    assert_eq!(a.json()["data"], json!({"keys": ["app", "other"]}));
    assert_eq!(b.json()["data"], a.json()["data"]);

    // Unknown mount (root passes ACL) and malformed JSON.
    let r = dv.root("GET", "/v1/nomount/x", None).await;
    assert_eq!(
        (r.status, r.errors()),
        (
            404,
            vec!["no handler for route \"nomount/x\". route entry not found.".to_string()]
        )
    );
    let r = dv
        .client
        .post(dv.url("/v1/secret/data/x"))
        .header("X-Vault-Token", ROOT)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().await.unwrap(),
        "{\"errors\":[\"error parsing JSON\"]}\n"
    );
}

#[tokio::test]
async fn health_seal_and_codes() {
    let dv = Dv::start();
    let r = dv.call("GET", "/v1/sys/health", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        keys_in_order(&r.text),
        [
            "initialized",
            "sealed",
            "standby",
            "performance_standby",
            "replication_performance_mode",
            "replication_dr_mode",
            "server_time_utc",
            "version",
            "enterprise",
            "cluster_name",
            "cluster_id",
            "echo_duration_ms",
            "clock_skew_ms",
            "replication_primary_canary_age_ms"
        ]
    );
    let head = dv
        .client
        .head(dv.url("/v1/sys/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.text().await.unwrap(), "");
    let r = dv
        .call("GET", "/v1/sys/health?activecode=299", None, None)
        .await;
    assert_eq!(r.status, 299);
    let r = dv
        .call("GET", "/v1/sys/health?activecode=abc", None, None)
        .await;
    assert_eq!((r.status, r.text.as_str()), (400, "{\"errors\":[]}\n"));
    let r = dv.call("POST", "/v1/sys/health", None, None).await;
    assert_eq!(r.status, 405);

    // Sealed: health 503 with body (no cluster fields), logical paths 503.
    let r = dv.call("POST", "/__devvault/seal", None, None).await;
    assert_eq!(r.status, 204);
    let r = dv.call("GET", "/v1/sys/health", None, None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["sealed"], json!(true));
    assert!(r.json().get("cluster_id").is_none());
    let r = dv
        .call("GET", "/v1/sys/health?sealedcode=200", None, None)
        .await;
    assert_eq!(r.status, 200);
    let r = dv.root("GET", "/v1/secret/data/x", None).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (503, "{\"errors\":[\"Vault is sealed\"]}\n")
    );
    let r = dv.call("GET", "/v1/sys/seal-status", None, None).await;
    assert_eq!(r.json()["sealed"], json!(true));
    dv.call("POST", "/__devvault/unseal", None, None).await;
    let r = dv.root("GET", "/v1/auth/token/lookup-self", None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn openbao_flavor_differs_where_it_should() {
    let dv = Dv::start_with(&["--flavor", "openbao"]);
    let r = dv.call("GET", "/v1/sys/health", None, None).await;
    assert_eq!(
        keys_in_order(&r.text),
        [
            "initialized",
            "sealed",
            "standby",
            "replication_performance_mode",
            "replication_dr_mode",
            "server_time_utc",
            "version",
            "cluster_name",
            "cluster_id"
        ]
    );
    let r = dv
        .root("POST", "/v1/auth/token/create", Some(&json!({"ttl": "1h"})))
        .await;
    assert!(r.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .starts_with("s."));
    assert!(r.json().get("mount_type").is_none());
    let r = dv
        .call("GET", "/v1/auth/token/lookup-self", Some("bogus"), None)
        .await;
    // OpenBao 2.7.2 (checked against the real server by tests/conformance.rs): a bare text,
    // not the multierror rendering of Vault's ACL denials.
    assert_eq!(
        (r.status, r.errors()),
        (403, vec!["permission denied".to_string()])
    );
}

#[tokio::test]
async fn tls_listener_serves_https() {
    let cert = format!(
        "{}/tests/fixtures/test-only-tls-cert.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let key = format!(
        "{}/tests/fixtures/test-only-tls-key.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let dv = Dv::start_with(&["--tls-cert", &cert, "--tls-key", &key]);
    assert!(dv.base.starts_with("https://127.0.0.1:"), "{}", dv.base);
    let r = dv.call("GET", "/v1/sys/health", None, None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn token_lifecycle_renewal_and_expiry() {
    let dv = Dv::start();
    dv.ok(
        "PUT",
        "/v1/sys/policies/acl/creator",
        Some(&json!({"policy": "path \"auth/token/create\" { capabilities = [\"update\"] }"})),
    )
    .await;
    let r = dv
        .ok("POST", "/v1/auth/token/create", Some(&json!({"policies": ["creator"], "ttl": "1h", "explicit_max_ttl": "100s", "meta": {"user": "armon"}})))
        .await;
    let v = r.json();
    assert_eq!(v["warnings"], json!(["TTL of \"1h\" exceeded the effective max_ttl of \"1m40s\"; TTL value is capped accordingly"]));
    let auth = &v["auth"];
    assert!(auth["client_token"].as_str().unwrap().starts_with("hvs."));
    assert_eq!(auth["lease_duration"], json!(100));
    assert_eq!(auth["policies"], json!(["creator", "default"]));
    assert_eq!(auth["metadata"], json!({"user": "armon"}));
    assert_eq!(auth["orphan"], json!(false));
    assert_eq!(auth["token_type"], json!("service"));
    assert_eq!(
        keys_in_order(&serde_json::to_string(auth).unwrap()).len(),
        12,
        "auth block has all 12 fields (identity_policies omitted when empty): {auth}"
    );
    let tok = auth["client_token"].as_str().unwrap().to_string();

    let r = dv
        .call("GET", "/v1/auth/token/lookup-self", Some(&tok), None)
        .await;
    let d = r.json()["data"].clone();
    for k in [
        "accessor",
        "creation_time",
        "creation_ttl",
        "display_name",
        "entity_id",
        "expire_time",
        "explicit_max_ttl",
        "id",
        "issue_time",
        "meta",
        "num_uses",
        "orphan",
        "path",
        "policies",
        "renewable",
        "ttl",
        "type",
    ] {
        assert!(d.get(k).is_some(), "lookup-self lacks {k}: {d}");
    }
    assert_eq!(d["path"], json!("auth/token/create"));
    assert_eq!(d["display_name"], json!("token"));
    assert_eq!(d["explicit_max_ttl"], json!(100));

    // renew-self with a too-large increment is capped with Vault's warning.
    let r = dv
        .call(
            "POST",
            "/v1/auth/token/renew-self",
            Some(&tok),
            Some(&json!({"increment": "1h"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let w = r.json()["warnings"][0].as_str().unwrap().to_string();
    assert!(
        w.starts_with("TTL of \"1h\" exceeded the effective max_ttl of \""),
        "{w}"
    );
    assert!(r.json()["auth"]["lease_duration"].as_i64().unwrap() <= 100);
    let r = dv
        .call(
            "POST",
            "/v1/auth/token/renew-self",
            Some(&tok),
            Some(&json!({"increment": 30})),
        )
        .await;
    assert_eq!(r.json()["auth"]["lease_duration"], json!(30));
    assert_eq!(r.json()["warnings"], Value::Null);

    // Child tokens die with their parent; revoke-self answers 204.
    let child = dv
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(&tok),
            Some(&json!({})),
        )
        .await;
    assert_eq!(child.status, 200, "{}", child.text);
    let child_tok = child.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = dv
        .call("POST", "/v1/auth/token/revoke-self", Some(&tok), None)
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    let r = dv
        .call("GET", "/v1/auth/token/lookup-self", Some(&child_tok), None)
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec![INVALID_TOKEN.to_string()])
    );

    // A non-root token cannot grant policies it does not hold.
    let t = dv
        .ok(
            "POST",
            "/v1/auth/token/create",
            Some(&json!({"policies": ["creator"]})),
        )
        .await
        .json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = dv
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(&t),
            Some(&json!({"policies": ["b"]})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (
            400,
            vec!["child policies must be subset of parent".to_string()]
        )
    );

    // Expiry on time.
    let short = dv
        .ok("POST", "/v1/auth/token/create", Some(&json!({"ttl": "1s"})))
        .await
        .json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let gone = eventually(Duration::from_secs(5), || async {
        dv.call("GET", "/v1/auth/token/lookup-self", Some(&short), None)
            .await
            .status
            == 403
    })
    .await;
    assert!(gone, "token did not expire");

    // Periodic tokens renew to their period; non-renewable tokens refuse.
    let p = dv
        .ok(
            "POST",
            "/v1/auth/token/create",
            Some(&json!({"period": "60s"})),
        )
        .await
        .json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = dv
        .call(
            "POST",
            "/v1/auth/token/renew-self",
            Some(&p),
            Some(&json!({"increment": 5})),
        )
        .await;
    assert_eq!(r.json()["auth"]["lease_duration"], json!(60));
    let nr = dv
        .ok(
            "POST",
            "/v1/auth/token/create",
            Some(&json!({"renewable": false, "ttl": "1h"})),
        )
        .await
        .json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = dv
        .call("POST", "/v1/auth/token/renew-self", Some(&nr), None)
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["lease is not renewable".to_string()])
    );

    // Use-limited tokens die after their last use.
    let once = dv
        .ok(
            "POST",
            "/v1/auth/token/create",
            Some(&json!({"num_uses": 1})),
        )
        .await
        .json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        dv.call("GET", "/v1/auth/token/lookup-self", Some(&once), None)
            .await
            .status,
        200
    );
    assert_eq!(
        dv.call("GET", "/v1/auth/token/lookup-self", Some(&once), None)
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn kv_v2_and_v1() {
    let dv = Dv::start();
    let w = |v: Value| json!({"data": v});
    dv.ok("POST", "/v1/secret/data/k", Some(&w(json!({"v": 1}))))
        .await;
    let r = dv
        .root(
            "POST",
            "/v1/secret/data/k",
            Some(&json!({"data": {"v": 2}, "options": {"cas": 0}})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (
            400,
            vec!["check-and-set parameter did not match the current version".to_string()]
        )
    );
    let r = dv
        .ok(
            "POST",
            "/v1/secret/data/k",
            Some(&json!({"data": {"v": 2}, "options": {"cas": 1}})),
        )
        .await;
    assert_eq!(r.json()["data"]["version"], json!(2));
    let r = dv.root("GET", "/v1/secret/data/k?version=1", None).await;
    assert_eq!(r.json()["data"]["data"], json!({"v": 1}));

    // Soft delete: 404 with the envelope and metadata, no errors key.
    let r = dv.root("DELETE", "/v1/secret/data/k", None).await;
    assert_eq!(r.status, 204);
    let r = dv.root("GET", "/v1/secret/data/k", None).await;
    assert_eq!(r.status, 404);
    let v = r.json();
    assert!(v.get("errors").is_none());
    assert_eq!(v["data"]["data"], Value::Null);
    assert_eq!(v["data"]["metadata"]["version"], json!(2));
    assert!(!v["data"]["metadata"]["deletion_time"]
        .as_str()
        .unwrap()
        .is_empty());
    assert_eq!(keys_in_order(&r.text)[0], "request_id");
    dv.ok(
        "POST",
        "/v1/secret/undelete/k",
        Some(&json!({"versions": [2]})),
    )
    .await;
    assert_eq!(dv.root("GET", "/v1/secret/data/k", None).await.status, 200);
    dv.ok(
        "PUT",
        "/v1/secret/destroy/k",
        Some(&json!({"versions": [1]})),
    )
    .await;
    let r = dv.root("GET", "/v1/secret/data/k?version=1", None).await;
    assert_eq!(
        (r.status, r.json()["data"]["metadata"]["destroyed"].clone()),
        (404, json!(true))
    );
    dv.ok(
        "POST",
        "/v1/secret/delete/k",
        Some(&json!({"versions": [2]})),
    )
    .await;
    assert_eq!(dv.root("GET", "/v1/secret/data/k", None).await.status, 404);
    let r = dv.root("GET", "/v1/secret/data/k?version=9", None).await;
    assert_eq!((r.status, r.text.as_str()), (404, "{\"errors\":[]}\n"));

    // Metadata.
    let m = dv.ok("GET", "/v1/secret/metadata/k", None).await.json()["data"].clone();
    assert_eq!(m["current_version"], json!(2));
    assert_eq!(m["delete_version_after"], json!("0s"));
    assert_eq!(m["versions"]["1"]["destroyed"], json!(true));
    dv.ok(
        "POST",
        "/v1/secret/metadata/k",
        Some(&json!({"max_versions": 2, "cas_required": true})),
    )
    .await;
    let r = dv
        .root("POST", "/v1/secret/data/k", Some(&w(json!({"v": 3}))))
        .await;
    assert_eq!(
        r.errors(),
        vec!["check-and-set parameter required for this call".to_string()]
    );
    dv.ok(
        "POST",
        "/v1/secret/data/k",
        Some(&json!({"data": {"v": 3}, "options": {"cas": 2}})),
    )
    .await;
    let m = dv.ok("GET", "/v1/secret/metadata/k", None).await.json()["data"].clone();
    assert_eq!(
        (
            m["oldest_version"].clone(),
            m["versions"].as_object().unwrap().len()
        ),
        (json!(2), 2)
    );
    dv.ok("DELETE", "/v1/secret/metadata/k", None).await;
    assert_eq!(
        dv.root("GET", "/v1/secret/metadata/k", None).await.status,
        404
    );
    let r = dv.ok("GET", "/v1/secret/config", None).await;
    assert_eq!(
        r.json()["data"],
        json!({"cas_required": false, "delete_version_after": "0s", "max_versions": 0})
    );

    // PATCH needs merge-patch content type.
    dv.ok(
        "POST",
        "/v1/secret/data/p",
        Some(&w(json!({"a": 1, "b": 2}))),
    )
    .await;
    let r = dv
        .root(
            "PATCH",
            "/v1/secret/data/p",
            Some(&w(json!({"b": null, "c": 3}))),
        )
        .await;
    assert_eq!(r.status, 415);
    let r = dv
        .call_h(
            "PATCH",
            "/v1/secret/data/p",
            Some(ROOT),
            Some(&w(json!({"b": null, "c": 3}))),
            &[("Content-Type", "application/merge-patch+json")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        dv.root("GET", "/v1/secret/data/p", None).await.json()["data"]["data"],
        json!({"a": 1, "c": 3})
    );

    // Reading a v2 mount without data/ → 404 with the invalid-path warning.
    let r = dv.root("GET", "/v1/secret/p", None).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["warnings"][0]
        .as_str()
        .unwrap()
        .starts_with("Invalid path for a versioned K/V secrets engine."));

    // KV v1.
    dv.ok("POST", "/v1/sys/mounts/kv1", Some(&json!({"type": "kv"})))
        .await;
    let r = dv
        .root("POST", "/v1/kv1/a/b", Some(&json!({"x": "y"})))
        .await;
    assert_eq!(r.status, 204);
    let r = dv.ok("GET", "/v1/kv1/a/b", None).await.json();
    assert_eq!(
        (
            r["data"].clone(),
            r["lease_duration"].clone(),
            r["lease_id"].clone()
        ),
        (json!({"x": "y"}), json!(2_764_800), json!(""))
    );
    dv.ok("POST", "/v1/kv1/t", Some(&json!({"x": "y", "ttl": "1h"})))
        .await;
    assert_eq!(
        dv.ok("GET", "/v1/kv1/t", None).await.json()["lease_duration"],
        json!(3600)
    );
    assert_eq!(
        dv.root("LIST", "/v1/kv1/", None).await.json()["data"]["keys"],
        json!(["a/", "t"])
    );
    assert_eq!(
        dv.root("LIST", "/v1/kv1/zzz/", None).await.text,
        "{\"errors\":[]}\n"
    );
    dv.ok("DELETE", "/v1/kv1/t", None).await;
    assert_eq!(dv.root("GET", "/v1/kv1/t", None).await.status, 404);

    // The CLI's KV preflight.
    let r = dv
        .ok("GET", "/v1/sys/internal/ui/mounts/secret/data/app", None)
        .await
        .json();
    assert_eq!(
        (
            r["data"]["path"].clone(),
            r["data"]["options"].clone(),
            r["data"]["type"].clone()
        ),
        (json!("secret/"), json!({"version": "2"}), json!("kv"))
    );
    let r = dv
        .ok("GET", "/v1/sys/internal/ui/mounts/kv1", None)
        .await
        .json();
    assert_eq!(r["data"]["options"], json!({"version": "1"}));
    let r = dv
        .root("GET", "/v1/sys/internal/ui/mounts/nothing", None)
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.errors(), vec!["preflight capability check returned 403, please ensure client's policies grant access to path \"nothing/\"".to_string()]);

    // sys/mounts lists with data also at the top level.
    let r = dv.ok("GET", "/v1/sys/mounts", None).await.json();
    assert_eq!(r["kv1/"]["type"], json!("kv"));
    assert_eq!(r["data"]["secret/"]["options"], json!({"version": "2"}));
    let r = dv
        .root("POST", "/v1/sys/mounts/kv1", Some(&json!({"type": "kv"})))
        .await;
    assert_eq!(
        r.errors(),
        vec!["path is already in use at kv1/".to_string()]
    );
    dv.ok("DELETE", "/v1/sys/mounts/kv1", None).await;
    assert_eq!(dv.root("GET", "/v1/kv1/a/b", None).await.status, 404);
}

#[tokio::test]
async fn acl_policies_enforced() {
    let dv = Dv::start();
    let policy = r#"
        # app policy
        path "secret/data/app/*" { capabilities = ["read", "list"] }
        path "secret/metadata/app" { capabilities = ["list"] }
        path "secret/data/+/shared" { capabilities = ["create", "update", "read"] }
    "#;
    assert_eq!(
        dv.root(
            "PUT",
            "/v1/sys/policies/acl/app",
            Some(&json!({"policy": policy}))
        )
        .await
        .status,
        204
    );
    let r = dv.ok("GET", "/v1/sys/policies/acl/app", None).await.json();
    assert_eq!(r["data"], json!({"name": "app", "policy": policy}));
    let r = dv.root("LIST", "/v1/sys/policies/acl", None).await.json();
    assert_eq!(r["data"]["keys"], json!(["app", "default", "root"]));
    let r = dv
        .root(
            "PUT",
            "/v1/sys/policies/acl/bad",
            Some(&json!({"policy": "path \"x\" { capabilities = [\"fly\"] }"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.errors()[0].starts_with("failed to parse policy"),
        "{:?}",
        r.errors()
    );

    dv.ok(
        "POST",
        "/v1/secret/data/app/db",
        Some(&json!({"data": {"p": "w"}})),
    )
    .await;
    let t = dv
        .ok(
            "POST",
            "/v1/auth/token/create",
            Some(&json!({"policies": ["app"]})),
        )
        .await
        .json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        dv.call("GET", "/v1/secret/data/app/db", Some(&t), None)
            .await
            .status,
        200
    );
    assert_eq!(
        dv.call("LIST", "/v1/secret/metadata/app", Some(&t), None)
            .await
            .status,
        200
    );
    let r = dv
        .call(
            "POST",
            "/v1/secret/data/app/db",
            Some(&t),
            Some(&json!({"data": {}})),
        )
        .await;
    assert_eq!((r.status, r.errors()), (403, vec![DENIED.to_string()]));
    assert_eq!(
        dv.call(
            "POST",
            "/v1/secret/data/team/shared",
            Some(&t),
            Some(&json!({"data": {"a": 1}}))
        )
        .await
        .status,
        200
    );
    assert_eq!(
        dv.call("GET", "/v1/secret/data/team/other", Some(&t), None)
            .await
            .status,
        403
    );
    // The default policy grants token self-management and lease renewal, not revocation.
    assert_eq!(
        dv.call("GET", "/v1/auth/token/lookup-self", Some(&t), None)
            .await
            .status,
        200
    );
    let r = dv
        .call(
            "POST",
            "/v1/sys/leases/revoke",
            Some(&t),
            Some(&json!({"lease_id": "x"})),
        )
        .await;
    assert_eq!((r.status, r.errors()), (403, vec![DENIED.to_string()]));
    let r = dv
        .call(
            "POST",
            "/v1/sys/leases/renew",
            Some(&t),
            Some(&json!({"lease_id": "x"})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["lease not found".to_string()])
    );
    let r = dv
        .call(
            "POST",
            "/v1/sys/capabilities-self",
            Some(&t),
            Some(&json!({"paths": ["secret/data/app/x"]})),
        )
        .await
        .json();
    assert_eq!(r["secret/data/app/x"], json!(["list", "read"]));
    // A token without the default policy cannot even renew itself.
    let nd = dv
        .ok(
            "POST",
            "/v1/auth/token/create",
            Some(&json!({"policies": ["app"], "no_default_policy": true})),
        )
        .await
        .json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = dv
        .call("POST", "/v1/auth/token/renew-self", Some(&nd), None)
        .await;
    assert_eq!((r.status, r.errors()), (403, vec![DENIED.to_string()]));
    assert_eq!(
        dv.root("DELETE", "/v1/sys/policies/acl/default", None)
            .await
            .errors(),
        vec!["cannot delete default policy".to_string()]
    );
}

#[tokio::test]
async fn approle_with_wrapped_secret_id() {
    let dv = Dv::start();
    dv.ok(
        "POST",
        "/v1/sys/auth/approle",
        Some(&json!({"type": "approle"})),
    )
    .await;
    let r = dv.ok("GET", "/v1/sys/auth", None).await.json();
    assert_eq!(r["data"]["approle/"]["type"], json!("approle"));
    let r = dv
        .root(
            "POST",
            "/v1/auth/approle/role/app",
            Some(&json!({"token_ttl": "1h", "token_max_ttl": "100s"})),
        )
        .await;
    assert_eq!(
        r.errors(),
        vec!["'token_ttl' cannot be greater than 'token_max_ttl'".to_string()]
    );
    dv.ok(
        "POST",
        "/v1/auth/approle/role/app",
        Some(&json!({"token_policies": ["app"], "token_ttl": "1h", "token_max_ttl": "2h", "secret_id_num_uses": 2, "secret_id_ttl": "10m"})),
    )
    .await;
    // The mount's max_lease_ttl caps login tokens below the role's TTL.
    dv.ok(
        "POST",
        "/v1/sys/auth/approle/tune",
        Some(&json!({"max_lease_ttl": "100s"})),
    )
    .await;
    let role = dv.ok("GET", "/v1/auth/approle/role/app", None).await.json()["data"].clone();
    assert_eq!(
        (
            role["token_ttl"].clone(),
            role["token_max_ttl"].clone(),
            role["secret_id_num_uses"].clone()
        ),
        (json!(3600), json!(7200), json!(2))
    );
    let role_id = dv
        .ok("GET", "/v1/auth/approle/role/app/role-id", None)
        .await
        .json()["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Wrapped secret-id.
    let r = dv
        .call_h(
            "POST",
            "/v1/auth/approle/role/app/secret-id",
            Some(ROOT),
            None,
            &[("X-Vault-Wrap-TTL", "60s")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["request_id"], json!(""));
    assert_eq!(v["data"], Value::Null);
    let wi = &v["wrap_info"];
    assert_eq!(
        (wi["ttl"].clone(), wi["creation_path"].clone()),
        (json!(60), json!("auth/approle/role/app/secret-id"))
    );
    assert!(wi["accessor"].as_str().is_some() && wi["wrapped_accessor"].as_str().is_some());
    let wrap = wi["token"].as_str().unwrap().to_string();
    let looked = dv
        .call(
            "POST",
            "/v1/sys/wrapping/lookup",
            Some(ROOT),
            Some(&json!({"token": wrap})),
        )
        .await;
    assert_eq!(looked.json()["data"]["creation_ttl"], json!(60));
    let u = dv
        .call("POST", "/v1/sys/wrapping/unwrap", Some(&wrap), None)
        .await;
    assert_eq!(u.status, 200);
    let secret_id = u.json()["data"]["secret_id"].as_str().unwrap().to_string();
    assert_eq!(u.json()["data"]["secret_id_num_uses"], json!(2));
    let again = dv
        .call("POST", "/v1/sys/wrapping/unwrap", Some(&wrap), None)
        .await;
    assert_eq!(
        (again.status, again.text.as_str()),
        (
            400,
            "{\"errors\":[\"wrapping token is not valid or does not exist\"]}\n"
        )
    );
    // Body form of unwrap.
    let r = dv
        .call_h(
            "POST",
            "/v1/auth/approle/role/app/secret-id",
            Some(ROOT),
            None,
            &[("X-Vault-Wrap-TTL", "30")],
        )
        .await;
    let wrap2 = r.json()["wrap_info"]["token"].as_str().unwrap().to_string();
    let u2 = dv
        .call(
            "POST",
            "/v1/sys/wrapping/unwrap",
            Some(ROOT),
            Some(&json!({"token": wrap2})),
        )
        .await;
    assert!(u2.json()["data"]["secret_id"].is_string());

    // Login: full auth block, capped TTL warning, mount_type "".
    let r = dv
        .call(
            "POST",
            "/v1/auth/approle/login",
            None,
            Some(&json!({"role_id": role_id, "secret_id": secret_id})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["mount_type"], json!(""));
    assert_eq!(v["warnings"], json!(["TTL of \"1h\" exceeded the effective max_ttl of \"1m40s\"; TTL value is capped accordingly"]));
    let a = &v["auth"];
    assert_eq!(
        (
            a["metadata"].clone(),
            a["orphan"].clone(),
            a["lease_duration"].clone()
        ),
        (json!({"role_name": "app"}), json!(true), json!(100))
    );
    assert_eq!(a["policies"], json!(["app", "default"]));
    assert_eq!(a["token_policies"], json!(["app", "default"]));
    assert!(!a["entity_id"].as_str().unwrap().is_empty());
    assert!(a["mfa_requirement"].is_null());
    let tok = a["client_token"].as_str().unwrap().to_string();
    let me = dv
        .call("GET", "/v1/auth/token/lookup-self", Some(&tok), None)
        .await
        .json();
    assert_eq!(
        (
            me["data"]["path"].clone(),
            me["data"]["display_name"].clone()
        ),
        (json!("auth/approle/login"), json!("approle"))
    );

    // Second use exhausts the secret id (num_uses 2).
    assert_eq!(
        dv.call(
            "POST",
            "/v1/auth/approle/login",
            None,
            Some(&json!({"role_id": role_id, "secret_id": secret_id}))
        )
        .await
        .status,
        200
    );
    let r = dv
        .call(
            "POST",
            "/v1/auth/approle/login",
            None,
            Some(&json!({"role_id": role_id, "secret_id": secret_id})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["invalid role or secret ID".to_string()])
    );
    let r = dv
        .call(
            "POST",
            "/v1/auth/approle/login",
            None,
            Some(&json!({"secret_id": secret_id})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (500, vec!["missing role_id".to_string()])
    );
    let r = dv
        .call(
            "POST",
            "/v1/auth/approle/login",
            None,
            Some(&json!({"role_id": role_id})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["missing secret_id".to_string()])
    );

    // Wrapping a login response sets wrapped_accessor; a wrapping token is useless elsewhere.
    let sid = dv
        .ok("POST", "/v1/auth/approle/role/app/secret-id", None)
        .await
        .json()["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = dv
        .call_h(
            "POST",
            "/v1/auth/approle/login",
            None,
            Some(&json!({"role_id": role_id, "secret_id": sid})),
            &[("X-Vault-Wrap-TTL", "5m")],
        )
        .await;
    let wi = r.json()["wrap_info"].clone();
    assert_eq!(wi["ttl"], json!(300));
    let w = wi["token"].as_str().unwrap().to_string();
    assert_eq!(
        dv.call("GET", "/v1/auth/token/lookup-self", Some(&w), None)
            .await
            .status,
        403
    );
    let inner = dv
        .call("POST", "/v1/sys/wrapping/unwrap", Some(&w), None)
        .await
        .json();
    assert_eq!(inner["auth"]["accessor"], wi["wrapped_accessor"]);
    let r = dv
        .call_h(
            "GET",
            "/v1/sys/health",
            None,
            None,
            &[("X-Vault-Wrap-TTL", "-5")],
        )
        .await;
    assert_eq!(r.status, 200, "health ignores wrapping");
    let r = dv
        .call_h(
            "GET",
            "/v1/secret/config",
            Some(ROOT),
            None,
            &[("X-Vault-Wrap-TTL", "-5")],
        )
        .await;
    assert_eq!(
        r.errors(),
        vec![
            "error parsing X-Vault-Wrap-TTL header: requested wrap ttl cannot be negative"
                .to_string()
        ]
    );
}

#[tokio::test]
async fn controls_faults_log_and_out_of_band_revocation() {
    let dv = Dv::start();
    let f = dv
        .call("POST", "/__devvault/faults", None, Some(&json!({"path_prefix": "/v1/secret/", "method": "GET", "count": 2, "status": 429, "headers": {"Retry-After": "3"}, "body": {"errors": ["request path \"secret/data/x\": rate limit quota exceeded"]}})))
        .await;
    assert_eq!(f.status, 200, "{}", f.text);
    for _ in 0..2 {
        let r = dv.root("GET", "/v1/secret/data/x", None).await;
        assert_eq!(
            (r.status, r.header("retry-after").as_deref()),
            (429, Some("3"))
        );
        assert_eq!(
            r.errors(),
            vec!["request path \"secret/data/x\": rate limit quota exceeded".to_string()]
        );
    }
    assert_eq!(dv.root("GET", "/v1/secret/data/x", None).await.status, 404);

    // Latency.
    dv.call(
        "POST",
        "/__devvault/faults",
        None,
        Some(&json!({"action": "latency", "latency_ms": 300, "count": 1})),
    )
    .await;
    let t = std::time::Instant::now();
    dv.call("GET", "/v1/sys/health", None, None).await;
    assert!(t.elapsed() >= Duration::from_millis(300));

    // Dropped connection mid-response.
    dv.call(
        "POST",
        "/__devvault/faults",
        None,
        Some(&json!({"action": "drop", "count": 1, "after_bytes": 10})),
    )
    .await;
    let r = dv.client.get(dv.url("/v1/sys/health")).send().await;
    let broken = match r {
        Err(_) => true,
        Ok(resp) => resp.bytes().await.is_err(),
    };
    assert!(broken, "dropped response must fail to read");
    // Reset: no response at all.
    dv.call(
        "POST",
        "/__devvault/faults",
        None,
        Some(&json!({"action": "reset", "count": 1})),
    )
    .await;
    assert!(dv
        .client
        .get(dv.url("/v1/sys/health"))
        .send()
        .await
        .is_err());
    // Truncated and invalid JSON.
    dv.call(
        "POST",
        "/__devvault/faults",
        None,
        Some(&json!({"action": "truncate", "count": 1})),
    )
    .await;
    let r = dv.call("GET", "/v1/sys/health", None, None).await;
    assert!(serde_json::from_str::<Value>(&r.text).is_err() && !r.text.is_empty());
    dv.call(
        "POST",
        "/__devvault/faults",
        None,
        Some(&json!({"action": "invalid_json", "count": 1})),
    )
    .await;
    let r = dv.call("GET", "/v1/sys/health", None, None).await;
    assert!(r.status == 200 && serde_json::from_str::<Value>(&r.text).is_err());
    dv.call(
        "POST",
        "/__devvault/faults",
        None,
        Some(&json!({"action": "oversize", "size_mb": 2, "count": 1})),
    )
    .await;
    let r = dv.call("GET", "/v1/sys/health", None, None).await;
    assert!(r.text.len() >= 2 * 1024 * 1024);
    // Unlimited fault until cleared.
    dv.call(
        "POST",
        "/__devvault/faults",
        None,
        Some(&json!({"path_prefix": "/v1/sys/health", "status": 502})),
    )
    .await;
    assert_eq!(
        dv.call("GET", "/v1/sys/health", None, None).await.status,
        502
    );
    assert_eq!(
        dv.call("GET", "/__devvault/faults", None, None)
            .await
            .json()["faults"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        dv.call("DELETE", "/__devvault/faults", None, None)
            .await
            .status,
        204
    );
    assert_eq!(
        dv.call("GET", "/v1/sys/health", None, None).await.status,
        200
    );

    // Request log.
    let log = dv
        .call(
            "GET",
            "/__devvault/requests?path_prefix=/v1/secret/",
            None,
            None,
        )
        .await
        .json();
    let reqs = log["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 3);
    assert_eq!(
        (
            reqs[0]["status"].clone(),
            reqs[0]["method"].clone(),
            reqs[0]["path"].clone()
        ),
        (json!(429), json!("GET"), json!("/v1/secret/data/x"))
    );
    assert!(reqs[0]["ts_ms"].as_i64().unwrap() > 1_600_000_000_000 && reqs[0]["mono_ms"].is_u64());
    let last = log["last_seq"].as_u64().unwrap();
    dv.call("GET", "/v1/sys/health", None, None).await;
    let newer = dv
        .call(
            "GET",
            &format!("/__devvault/requests?since_seq={last}"),
            None,
            None,
        )
        .await
        .json();
    assert_eq!(newer["requests"].as_array().unwrap().len(), 1);
    assert_eq!(
        dv.call("DELETE", "/__devvault/requests", None, None)
            .await
            .status,
        204
    );

    // Out-of-band token revocation by accessor.
    let a = dv
        .ok("POST", "/v1/auth/token/create", Some(&json!({"ttl": "1h"})))
        .await
        .json()["auth"]
        .clone();
    let toks = dv
        .call("GET", "/__devvault/tokens", None, None)
        .await
        .json();
    assert!(toks["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["accessor"] == a["accessor"]));
    let r = dv
        .call(
            "POST",
            "/__devvault/revoke-token",
            None,
            Some(&json!({"accessor": a["accessor"]})),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = dv
        .call(
            "GET",
            "/v1/auth/token/lookup-self",
            a["client_token"].as_str(),
            None,
        )
        .await;
    assert_eq!(r.errors(), vec![INVALID_TOKEN.to_string()]);
    assert_eq!(
        dv.call(
            "POST",
            "/__devvault/revoke-lease",
            None,
            Some(&json!({"lease_id": "nope"}))
        )
        .await
        .status,
        404
    );
    assert_eq!(
        dv.call("GET", "/__devvault/leases", None, None)
            .await
            .json()["leases"],
        json!([])
    );
}
