//! JWT auth (`role_type: jwt` only): tokens are verified against
//! `jwt_validation_pubkeys`; then `exp`/`nbf`, `bound_issuer`,
//! `bound_audiences`, `bound_subject`, `bound_claims` and the `user_claim`
//! are checked. OIDC flows, JWKS and discovery URLs are not supported.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{login, pem_is_public_key, str_field, verify_jwt, JwtError, LoginGrant, TokenParams};
use crate::acl::Op;
use crate::error::{ApiError, ApiResult};
use crate::exchange::{Logical, Reply, Req};
use crate::flavor::Flavor;
use crate::state::{Backend, Core};
use crate::util;

/// `auth/<mount>/config`.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub pubkeys: Vec<String>,
    pub bound_issuer: String,
    pub default_role: String,
}

/// `auth/<mount>/role/<name>`.
#[derive(Debug, Clone, Default)]
pub struct Role {
    pub role_type: String,
    pub bound_audiences: Vec<String>,
    pub bound_subject: String,
    pub user_claim: String,
    pub bound_claims: Map<String, Value>,
    pub claim_mappings: BTreeMap<String, String>,
    pub clock_skew_leeway: u64,
    /// The leeway as written, if it was (OpenBao reports 0 for an unset one).
    pub clock_skew_given: Option<u64>,
    pub token: TokenParams,
}

/// A JWT auth mount.
#[derive(Debug, Default)]
pub struct Jwt {
    config: Option<Config>,
    roles: BTreeMap<String, Role>,
}

fn mount_state<'a>(core: &'a mut Core, mount: &str) -> ApiResult<&'a mut Jwt> {
    match core.auth_mounts.get_mut(mount).map(|m| &mut m.backend) {
        Some(Backend::Jwt(j)) => Ok(j),
        _ => Err(ApiError::unsupported_path()),
    }
}

/// Dispatches `auth/<mount>/<sub>`.
pub fn handle(core: &mut Core, req: &mut Req, mount: &str, sub: &str) -> ApiResult<Reply> {
    let write = matches!(req.op, Op::Update | Op::Create);
    match sub {
        "login" if write => do_login(core, req, mount),
        "config" => config(mount_state(core, mount)?, req),
        "role/" | "role" if req.op == Op::List => {
            let j = mount_state(core, mount)?;
            let keys: Vec<&String> = j.roles.keys().collect();
            if keys.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(Reply::Logical(Logical::data(json!({ "keys": keys }))))
        }
        s if s.starts_with("role/") => {
            let flavor = core.flavor;
            role(mount_state(core, mount)?, req, &s["role/".len()..], flavor)
        }
        "login" => Err(ApiError::unsupported_operation()),
        _ => Err(ApiError::unsupported_path()),
    }
}

fn config(j: &mut Jwt, req: &Req) -> ApiResult<Reply> {
    match req.op {
        Op::Read => {
            let c = j.config.as_ref().ok_or_else(ApiError::not_found)?;
            Ok(Reply::Logical(Logical::data(json!({
                "bound_issuer": c.bound_issuer,
                "default_role": c.default_role,
                "jwks_ca_pem": "",
                "jwks_url": "",
                "jwt_supported_algs": [],
                "jwt_validation_pubkeys": c.pubkeys,
                "namespace_in_state": true,
                "oidc_client_id": "",
                "oidc_discovery_ca_pem": "",
                "oidc_discovery_url": "",
                "oidc_response_mode": "",
                "oidc_response_types": [],
                "provider_config": {},
            }))))
        }
        Op::Update | Op::Create => {
            let d = &req.data;
            if !str_field(d, "jwks_url").is_empty()
                || !str_field(d, "oidc_discovery_url").is_empty()
            {
                return Err(ApiError::bad_request(
                    "devvault supports only jwt_validation_pubkeys (no jwks_url / oidc_discovery_url)",
                ));
            }
            let pubkeys = d
                .get("jwt_validation_pubkeys")
                .map(util::comma_list_pem)
                .unwrap_or_default();
            if pubkeys.is_empty() {
                return Err(ApiError::bad_request(
                    "exactly one of 'jwt_validation_pubkeys', 'jwks_url' or 'oidc_discovery_url' must be set",
                ));
            }
            if pubkeys.iter().any(|p| !pem_is_public_key(p)) {
                return Err(ApiError::bad_request("error parsing public key: data does not contain any valid RSA or ECDSA public keys"));
            }
            j.config = Some(Config {
                pubkeys,
                bound_issuer: str_field(d, "bound_issuer").to_string(),
                default_role: str_field(d, "default_role").to_string(),
            });
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

fn role(j: &mut Jwt, req: &Req, name: &str, flavor: Flavor) -> ApiResult<Reply> {
    match req.op {
        Op::Read => {
            let r = j.roles.get(name).ok_or_else(ApiError::not_found)?;
            let mut m = Map::new();
            m.insert("allowed_redirect_uris".into(), json!([]));
            m.insert("bound_audiences".into(), json!(r.bound_audiences));
            m.insert(
                "bound_claims".into(),
                if r.bound_claims.is_empty() {
                    Value::Null
                } else {
                    json!(r.bound_claims)
                },
            );
            m.insert("bound_claims_type".into(), json!("string"));
            m.insert("bound_subject".into(), json!(r.bound_subject));
            m.insert(
                "claim_mappings".into(),
                if r.claim_mappings.is_empty() {
                    Value::Null
                } else {
                    json!(r.claim_mappings)
                },
            );
            m.insert("clock_skew_leeway".into(), json!(r.clock_skew_leeway));
            m.insert("expiration_leeway".into(), json!(150));
            m.insert("groups_claim".into(), json!(""));
            m.insert("not_before_leeway".into(), json!(150));
            m.insert("role_type".into(), json!(r.role_type));
            m.insert("user_claim".into(), json!(r.user_claim));
            m.insert("user_claim_json_pointer".into(), json!(false));
            m.insert("verbose_oidc_logging".into(), json!(false));
            if flavor == Flavor::OpenBao {
                // OpenBao 2.7 reports unset leeways as 0 (its JWT library then applies its
                // own defaults) and has OIDC fields of its own.
                m.insert("allowed_redirect_uris".into(), Value::Null);
                m.insert(
                    "clock_skew_leeway".into(),
                    json!(r.clock_skew_given.unwrap_or(0)),
                );
                m.insert("expiration_leeway".into(), json!(0));
                m.insert("not_before_leeway".into(), json!(0));
                m.insert("callback_mode".into(), json!("client"));
                m.insert("max_age".into(), json!(0));
                m.insert("oauth2_metadata".into(), Value::Null);
                m.insert("oidc_disable_confirmation".into(), json!(false));
                m.insert("oidc_scopes".into(), Value::Null);
                m.insert("token_policies_template_claims".into(), json!(false));
            }
            r.token.populate(&mut m, flavor);
            Ok(Reply::Logical(Logical::data(Value::Object(m))))
        }
        Op::Update | Op::Create => {
            let d = &req.data;
            let mut r = j.roles.get(name).cloned().unwrap_or_else(|| Role {
                role_type: "oidc".into(),
                clock_skew_leeway: 60,
                ..Default::default()
            });
            if let Some(v) = d.get("role_type").and_then(Value::as_str) {
                if v != "jwt" && v != "oidc" {
                    return Err(ApiError::bad_request(format!("invalid 'role_type': {v}")));
                }
                r.role_type = v.to_string();
            }
            if let Some(v) = d.get("bound_audiences") {
                r.bound_audiences = util::comma_list(v);
            }
            if let Some(v) = d.get("bound_subject").and_then(Value::as_str) {
                r.bound_subject = v.to_string();
            }
            if let Some(v) = d.get("user_claim").and_then(Value::as_str) {
                r.user_claim = v.to_string();
            }
            if let Some(Value::Object(m)) = d.get("bound_claims") {
                r.bound_claims = m.clone();
            }
            if let Some(Value::Object(m)) = d.get("claim_mappings") {
                r.claim_mappings = m
                    .iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect();
            }
            if let Some(v) = d.get("clock_skew_leeway") {
                r.clock_skew_leeway = util::parse_duration(v)
                    .map_err(ApiError::bad_request)?
                    .as_secs();
                r.clock_skew_given = Some(r.clock_skew_leeway);
            }
            r.token.update(d)?;
            if r.user_claim.is_empty() {
                return Err(ApiError::bad_request(
                    "a user claim must be defined on the role",
                ));
            }
            if r.role_type == "jwt"
                && r.bound_audiences.is_empty()
                && r.bound_subject.is_empty()
                && r.bound_claims.is_empty()
            {
                return Err(ApiError::bad_request(
                    "must have at least one bound constraint when creating/updating a role",
                ));
            }
            j.roles.insert(name.to_string(), r);
            Ok(Reply::NoContent)
        }
        Op::Delete => {
            j.roles.remove(name);
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

fn claim_values(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other.to_string()],
    }
}

/// The claim-validation texts, which differ between Vault's and OpenBao 2.7's JWT plugins
/// (OpenBao's texts checked against the real server by tests/conformance.rs).
struct ClaimTexts {
    expired: &'static str,
    not_yet_valid: &'static str,
    issuer: &'static str,
    audience: &'static str,
}

impl ClaimTexts {
    fn of(flavor: Flavor) -> ClaimTexts {
        match flavor {
            Flavor::Vault => ClaimTexts {
                expired: "error validating claims: validation failed, token is expired (exp)",
                not_yet_valid: "error validating claims: validation failed, token not valid yet (nbf)",
                issuer: "error validating claims: validation failed, invalid issuer claim (iss)",
                audience: "error validating claims: invalid audience (aud) claim: audience claim does not match any expected audience",
            },
            Flavor::OpenBao => ClaimTexts {
                expired: "invalid expiration time (exp) claim: token is expired",
                not_yet_valid: "invalid not before (nbf) claim: token not yet valid",
                issuer: "invalid issuer (iss) claim",
                audience: "invalid audience (aud) claim: audience claim does not match any expected audience",
            },
        }
    }
}

fn invalid(msg: &str) -> ApiError {
    ApiError::bad_request(format!("error validating token: {msg}"))
}

fn do_login(core: &mut Core, req: &Req, mount: &str) -> ApiResult<Reply> {
    let j = mount_state(core, mount)?;
    let cfg = j
        .config
        .clone()
        .ok_or_else(|| ApiError::bad_request("could not load configuration"))?;
    let mut role_name = str_field(&req.data, "role").to_string();
    if role_name.is_empty() {
        role_name = cfg.default_role.clone();
    }
    if role_name.is_empty() {
        return Err(ApiError::bad_request("missing role"));
    }
    let role =
        j.roles.get(&role_name).cloned().ok_or_else(|| {
            ApiError::bad_request(format!("role {role_name:?} could not be found"))
        })?;
    if role.role_type == "oidc" {
        return Err(ApiError::bad_request(
            "role with oidc role_type is not allowed",
        ));
    }
    let token = str_field(&req.data, "jwt");
    if token.is_empty() {
        return Err(ApiError::bad_request("missing token"));
    }
    let texts = ClaimTexts::of(core.flavor);
    let claims = verify_jwt(token, &cfg.pubkeys, role.clock_skew_leeway).map_err(|e| match e {
        JwtError::Signature => invalid("error verifying token signature: no known key successfully validated the token signature"),
        JwtError::Expired => invalid(texts.expired),
        JwtError::NotYetValid => invalid(texts.not_yet_valid),
        other => invalid(&other.to_string()),
    })?;
    if !cfg.bound_issuer.is_empty()
        && claims.get("iss").and_then(Value::as_str) != Some(cfg.bound_issuer.as_str())
    {
        return Err(invalid(texts.issuer));
    }
    let aud = claim_values(claims.get("aud"));
    if role.bound_audiences.is_empty() {
        if !aud.is_empty() {
            return Err(ApiError::bad_request(
                "audience claim found in JWT but no audiences bound to the role",
            ));
        }
    } else if !aud.iter().any(|a| role.bound_audiences.contains(a)) {
        return Err(invalid(texts.audience));
    }
    if !role.bound_subject.is_empty()
        && claims.get("sub").and_then(Value::as_str) != Some(role.bound_subject.as_str())
    {
        return Err(match core.flavor {
            Flavor::Vault => ApiError::bad_request("sub claim does not match expected value"),
            Flavor::OpenBao => invalid("invalid subject (sub) claim"),
        });
    }
    for (k, want) in &role.bound_claims {
        let allowed = claim_values(Some(want));
        let have = claim_values(claims.get(k));
        if !have.iter().any(|h| allowed.contains(h)) {
            return Err(ApiError::bad_request(format!("error validating claims: claim {k:?} does not match any associated bound claim values")));
        }
    }
    let user = match claims.get(&role.user_claim) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(ApiError::bad_request(format!(
                "claim {:?} not found in token",
                role.user_claim
            )))
        }
    };
    let mut metadata = BTreeMap::from([("role".to_string(), role_name.clone())]);
    for (claim, meta_key) in &role.claim_mappings {
        if let Some(v) = claims.get(claim) {
            metadata.insert(
                meta_key.clone(),
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            );
        }
    }
    login(
        core,
        LoginGrant {
            mount,
            params: &role.token,
            metadata,
            display_name: user.clone(),
            alias: user,
        },
    )
}
