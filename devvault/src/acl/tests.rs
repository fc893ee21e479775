use super::*;

fn acl(src: &str) -> Acl {
    let p = Policy::parse(src).expect("parse");
    Acl::new([&p], false)
}

#[test]
fn parses_and_matches_globs() {
    let a = acl(r#"
        # comment
        path "secret/data/*" { capabilities = ["read", "list"] }
        path "database/creds/app" {
          capabilities = ["read"]
        }
        path "secret/data/private/*" { capabilities = ["deny"] }
        path "kv/+/foo" { capabilities = ["update"] }
        "#);
    assert!(a.allowed("secret/data/x", Op::Read));
    assert!(!a.allowed("secret/data/x", Op::Update));
    assert!(!a.allowed("secret/data/private/x", Op::Read));
    assert!(a.allowed("database/creds/app", Op::Read));
    assert!(!a.allowed("database/creds/other", Op::Read));
    assert!(a.allowed("kv/any/foo", Op::Update));
    assert!(!a.allowed("kv/any/bar", Op::Update));
}

#[test]
fn default_policy_parses() {
    let a = acl(DEFAULT_POLICY);
    assert!(a.allowed("auth/token/lookup-self", Op::Read));
    assert!(a.allowed("sys/leases/renew", Op::Update));
    assert!(!a.allowed("sys/leases/revoke", Op::Update));
}

#[test]
fn json_policy_parses() {
    let a = acl(r#"{"path": {"a/b": {"capabilities": ["read"]}}}"#);
    assert!(a.allowed("a/b", Op::Read));
}

#[test]
fn hostile_nesting_is_an_error_not_a_crash() {
    let deep = format!(
        "path \"a\" {{ x = {}1{} }}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(Policy::parse(&deep).is_err());
}

#[test]
fn preflight_reach_of_segment_rules() {
    // The default policy's `identity/oidc/provider/+/authorize` must not open other mounts.
    let a = acl(DEFAULT_POLICY);
    assert!(!a.has_any_under("kv0/"));
    assert!(a.has_any_under("identity/"));
    let a = acl(r#"path "kv/+/app" { capabilities = ["read"] }"#);
    assert!(a.has_any_under("kv/"));
    assert!(!a.has_any_under("kv2/"));
}

#[test]
fn bad_capability_rejected() {
    assert!(Policy::parse(r#"path "a" { capabilities = ["fly"] }"#).is_err());
    assert!(Policy::parse(r#"path "a" { capabilities = ["read"] "#).is_err());
}
