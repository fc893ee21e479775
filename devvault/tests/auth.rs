//! Kubernetes and JWT logins with the committed test-only keypairs.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{fixture, Dv};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sign_rs(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(fixture("test-only-rsa-private.pem").as_bytes()).unwrap();
    encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
}

fn sign_es(claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(fixture("test-only-ec-private.pem").as_bytes()).unwrap();
    encode(&Header::new(Algorithm::ES256), claims, &key).unwrap()
}

fn projected(ns: &str, sa: &str, exp: i64) -> Value {
    json!({
        "aud": ["https://kubernetes.default.svc"],
        "exp": exp,
        "iat": now() - 10,
        "iss": "https://kubernetes.default.svc",
        "kubernetes.io": {
            "namespace": ns,
            "pod": {"name": "app-0", "uid": "pod-uid"},
            "serviceaccount": {"name": sa, "uid": "4ce3a724-ddad-4cb3-ae46-2f97fc420a3d"}
        },
        "sub": format!("system:serviceaccount:{ns}:{sa}")
    })
}

#[tokio::test]
async fn kubernetes_login() {
    let dv = Dv::start();
    dv.ok(
        "POST",
        "/v1/sys/auth/kubernetes",
        Some(&json!({"type": "kubernetes"})),
    )
    .await;
    let r = dv
        .root(
            "POST",
            "/v1/auth/kubernetes/config",
            Some(&json!({"kubernetes_host": "https://k8s", "pem_keys": ["not a key"]})),
        )
        .await;
    assert_eq!(r.status, 400);
    dv.ok(
        "POST",
        "/v1/auth/kubernetes/config",
        Some(&json!({"kubernetes_host": "https://k8s", "pem_keys": [fixture("test-only-rsa-public.pem"), fixture("test-only-ec-public.pem")]})),
    )
    .await;
    let cfg = dv
        .ok("GET", "/v1/auth/kubernetes/config", None)
        .await
        .json()["data"]
        .clone();
    assert_eq!(cfg["kubernetes_host"], json!("https://k8s"));
    assert_eq!(cfg["pem_keys"].as_array().unwrap().len(), 2);
    dv.ok(
        "POST",
        "/v1/auth/kubernetes/role/app",
        Some(&json!({"bound_service_account_names": ["vault-auth"], "bound_service_account_namespaces": "default", "policies": ["otus-policy"], "ttl": "24h"})),
    )
    .await;
    let role = dv
        .ok("GET", "/v1/auth/kubernetes/role/app", None)
        .await
        .json()["data"]
        .clone();
    assert_eq!(
        (
            role["token_ttl"].clone(),
            role["bound_service_account_names"].clone()
        ),
        (json!(86400), json!(["vault-auth"]))
    );

    // Projected (ES256) token.
    let jwt = sign_es(&projected("default", "vault-auth", now() + 600));
    let r = dv
        .call(
            "POST",
            "/v1/auth/kubernetes/login",
            None,
            Some(&json!({"role": "app", "jwt": jwt})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["mount_type"], json!(""));
    let a = &v["auth"];
    assert_eq!(
        a["metadata"],
        json!({"role": "app", "service_account_name": "vault-auth", "service_account_namespace": "default", "service_account_secret_name": "", "service_account_uid": "4ce3a724-ddad-4cb3-ae46-2f97fc420a3d"})
    );
    assert_eq!(
        (
            a["lease_duration"].clone(),
            a["orphan"].clone(),
            a["renewable"].clone()
        ),
        (json!(86400), json!(true), json!(true))
    );
    assert_eq!(a["policies"], json!(["default", "otus-policy"]));
    let tok = a["client_token"].as_str().unwrap();
    let me = dv
        .call("GET", "/v1/auth/token/lookup-self", Some(tok), None)
        .await
        .json()["data"]
        .clone();
    assert_eq!(me["path"], json!("auth/kubernetes/login"));

    // Legacy secret-based (RS256) token without exp.
    let legacy = sign_rs(&json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": "default",
        "kubernetes.io/serviceaccount/secret.name": "vault-auth-token-pd21c",
        "kubernetes.io/serviceaccount/service-account.name": "vault-auth",
        "kubernetes.io/serviceaccount/service-account.uid": "aa9aa8ff-98d0-11e7-9bb7-0800276d99bf",
        "sub": "system:serviceaccount:default:vault-auth"
    }));
    let r = dv
        .call(
            "POST",
            "/v1/auth/kubernetes/login",
            None,
            Some(&json!({"role": "app", "jwt": legacy})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json()["auth"]["metadata"]["service_account_secret_name"],
        json!("vault-auth-token-pd21c")
    );

    // Rejections with Vault's texts.
    let cases = [
        (
            sign_es(&projected("default", "other", now() + 600)),
            403,
            "service account name not authorized",
        ),
        (
            sign_es(&projected("kube-system", "vault-auth", now() + 600)),
            403,
            "namespace not authorized",
        ),
        (
            sign_es(&projected("default", "vault-auth", now() - 3600)),
            403,
            "permission denied",
        ),
    ];
    for (jwt, status, msg) in cases {
        let r = dv
            .call(
                "POST",
                "/v1/auth/kubernetes/login",
                None,
                Some(&json!({"role": "app", "jwt": jwt})),
            )
            .await;
        assert_eq!((r.status, r.errors()), (status, vec![msg.to_string()]));
    }
    // Tampered payload: signature no longer matches.
    let good = sign_rs(&projected("default", "vault-auth", now() + 600));
    let parts: Vec<&str> = good.split('.').collect();
    let evil = sign_rs(&projected("default", "admin", now() + 600));
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        evil.split('.').nth(1).unwrap(),
        parts[2]
    );
    let r = dv
        .call(
            "POST",
            "/v1/auth/kubernetes/login",
            None,
            Some(&json!({"role": "app", "jwt": tampered})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec!["permission denied".to_string()])
    );
    let r = dv
        .call(
            "POST",
            "/v1/auth/kubernetes/login",
            None,
            Some(&json!({"role": "nope", "jwt": good})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["invalid role name \"nope\"".to_string()])
    );
    let r = dv
        .call(
            "POST",
            "/v1/auth/kubernetes/login",
            None,
            Some(&json!({"role": "app"})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["missing jwt".to_string()])
    );

    // Audience-bound role.
    dv.ok(
        "POST",
        "/v1/auth/kubernetes/role/aud",
        Some(&json!({"bound_service_account_names": "*", "bound_service_account_namespaces": "*", "audience": "vault"})),
    )
    .await;
    let r = dv
        .call(
            "POST",
            "/v1/auth/kubernetes/login",
            None,
            Some(&json!({"role": "aud", "jwt": good})),
        )
        .await;
    assert_eq!(r.status, 403);
    let mut c = projected("x", "y", now() + 600);
    c["aud"] = json!("vault");
    let r = dv
        .call(
            "POST",
            "/v1/auth/kubernetes/login",
            None,
            Some(&json!({"role": "aud", "jwt": sign_rs(&c)})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn jwt_login() {
    let dv = Dv::start();
    dv.ok("POST", "/v1/sys/auth/jwt", Some(&json!({"type": "jwt"})))
        .await;
    dv.ok(
        "POST",
        "/v1/auth/jwt/config",
        Some(&json!({"jwt_validation_pubkeys": [fixture("test-only-rsa-public.pem")], "bound_issuer": "https://issuer.example"})),
    )
    .await;
    let r = dv
        .root(
            "POST",
            "/v1/auth/jwt/role/ci",
            Some(&json!({"role_type": "jwt", "bound_audiences": ["vault"]})),
        )
        .await;
    assert_eq!(
        r.errors(),
        vec!["a user claim must be defined on the role".to_string()]
    );
    dv.ok(
        "POST",
        "/v1/auth/jwt/role/ci",
        Some(&json!({"role_type": "jwt", "bound_audiences": ["vault"], "bound_subject": "repo:acme/app", "user_claim": "sub", "token_policies": ["ci"], "token_ttl": "1h", "token_max_ttl": "2h"})),
    )
    .await;
    let claims = |sub: &str, aud: &str, exp: i64, nbf: i64| json!({"iss": "https://issuer.example", "sub": sub, "aud": aud, "exp": exp, "nbf": nbf, "iat": now()});
    let ok = sign_rs(&claims("repo:acme/app", "vault", now() + 300, now() - 10));
    let r = dv
        .call(
            "POST",
            "/v1/auth/jwt/login",
            None,
            Some(&json!({"role": "ci", "jwt": ok})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let a = r.json()["auth"].clone();
    assert_eq!(
        (
            a["metadata"].clone(),
            a["lease_duration"].clone(),
            a["policies"].clone()
        ),
        (json!({"role": "ci"}), json!(3600), json!(["ci", "default"]))
    );
    assert_eq!(a["orphan"], json!(true));

    let bad = [
        (sign_rs(&claims("repo:acme/app", "other", now() + 300, now() - 10)), "error validating token: error validating claims: invalid audience (aud) claim: audience claim does not match any expected audience"),
        (sign_rs(&claims("repo:acme/app", "vault", now() - 600, now() - 900)), "error validating token: error validating claims: validation failed, token is expired (exp)"),
        (sign_rs(&claims("repo:acme/app", "vault", now() + 900, now() + 600)), "error validating token: error validating claims: validation failed, token not valid yet (nbf)"),
        (sign_rs(&claims("repo:evil/app", "vault", now() + 300, now() - 10)), "sub claim does not match expected value"),
        (sign_es(&claims("repo:acme/app", "vault", now() + 300, now() - 10)), "error validating token: error verifying token signature: no known key successfully validated the token signature"),
    ];
    for (jwt, msg) in bad {
        let r = dv
            .call(
                "POST",
                "/v1/auth/jwt/login",
                None,
                Some(&json!({"role": "ci", "jwt": jwt})),
            )
            .await;
        assert_eq!((r.status, r.errors()), (400, vec![msg.to_string()]));
    }
    let r = dv
        .call(
            "POST",
            "/v1/auth/jwt/login",
            None,
            Some(&json!({"role": "zz", "jwt": "x"})),
        )
        .await;
    assert_eq!(
        r.errors(),
        vec!["role \"zz\" could not be found".to_string()]
    );
}
