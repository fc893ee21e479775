//! Kubernetes auth. Instead of calling the TokenReview API, the service
//! account JWT's signature is verified locally against `pem_keys` (RS256/ES256
//! and friends), then `exp`/`nbf`, audience and the role's service-account
//! name/namespace bindings are checked. Legacy (secret-based) and projected
//! token claim layouts are both understood.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{glob_match, login, pem_is_public_key, str_field, verify_jwt, LoginGrant, TokenParams};
use crate::acl::Op;
use crate::error::{ApiError, ApiResult};
use crate::exchange::{Logical, Reply, Req};
use crate::flavor::Flavor;
use crate::state::{Backend, Core};
use crate::util;

/// `auth/<mount>/config`.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub kubernetes_host: String,
    pub kubernetes_ca_cert: String,
    pub pem_keys: Vec<String>,
    pub issuer: String,
    pub disable_iss_validation: bool,
    pub disable_local_ca_jwt: bool,
    pub token_reviewer_jwt_set: bool,
}

/// `auth/<mount>/role/<name>`.
#[derive(Debug, Clone, Default)]
pub struct Role {
    pub names: Vec<String>,
    pub namespaces: Vec<String>,
    pub audience: String,
    pub alias_name_source: String,
    pub token: TokenParams,
}

/// A Kubernetes auth mount.
#[derive(Debug, Default)]
pub struct Kubernetes {
    config: Option<Config>,
    roles: BTreeMap<String, Role>,
}

fn mount_state<'a>(core: &'a mut Core, mount: &str) -> ApiResult<&'a mut Kubernetes> {
    match core.auth_mounts.get_mut(mount).map(|m| &mut m.backend) {
        Some(Backend::Kubernetes(k)) => Ok(k),
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
            let k = mount_state(core, mount)?;
            let keys: Vec<&String> = k.roles.keys().collect();
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

fn config(k: &mut Kubernetes, req: &Req) -> ApiResult<Reply> {
    match req.op {
        Op::Read => {
            let c = k.config.as_ref().ok_or_else(ApiError::not_found)?;
            Ok(Reply::Logical(Logical::data(json!({
                "disable_iss_validation": c.disable_iss_validation,
                "disable_local_ca_jwt": c.disable_local_ca_jwt,
                "issuer": c.issuer,
                "kubernetes_ca_cert": c.kubernetes_ca_cert,
                "kubernetes_host": c.kubernetes_host,
                "pem_keys": c.pem_keys,
                "token_reviewer_jwt_set": c.token_reviewer_jwt_set,
                "use_annotations_as_alias_metadata": false,
            }))))
        }
        Op::Update | Op::Create => {
            let d = &req.data;
            let host = str_field(d, "kubernetes_host");
            if host.is_empty() {
                return Err(ApiError::bad_request("no host provided"));
            }
            let pem_keys = d
                .get("pem_keys")
                .map(util::comma_list_pem)
                .unwrap_or_default();
            for p in &pem_keys {
                if !pem_is_public_key(p) {
                    return Err(ApiError::bad_request(
                        "data does not contain any valid RSA or ECDSA public keys",
                    ));
                }
            }
            k.config = Some(Config {
                kubernetes_host: host.to_string(),
                kubernetes_ca_cert: str_field(d, "kubernetes_ca_cert").to_string(),
                pem_keys,
                issuer: str_field(d, "issuer").to_string(),
                disable_iss_validation: d
                    .get("disable_iss_validation")
                    .map(util::parse_bool)
                    .transpose()
                    .map_err(ApiError::bad_request)?
                    .unwrap_or(true),
                disable_local_ca_jwt: d
                    .get("disable_local_ca_jwt")
                    .map(util::parse_bool)
                    .transpose()
                    .map_err(ApiError::bad_request)?
                    .unwrap_or(false),
                token_reviewer_jwt_set: !str_field(d, "token_reviewer_jwt").is_empty(),
            });
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

fn role(k: &mut Kubernetes, req: &Req, name: &str, flavor: Flavor) -> ApiResult<Reply> {
    match req.op {
        Op::Read => {
            let r = k.roles.get(name).ok_or_else(ApiError::not_found)?;
            let mut m = Map::new();
            m.insert(
                "alias_name_source".into(),
                json!(if r.alias_name_source.is_empty() {
                    "serviceaccount_uid"
                } else {
                    &r.alias_name_source
                }),
            );
            m.insert("audience".into(), json!(r.audience));
            m.insert("bound_service_account_names".into(), json!(r.names));
            m.insert("bound_service_account_namespace_selector".into(), json!(""));
            m.insert(
                "bound_service_account_namespaces".into(),
                json!(r.namespaces),
            );
            r.token.populate(&mut m, flavor);
            Ok(Reply::Logical(Logical::data(Value::Object(m))))
        }
        Op::Update | Op::Create => {
            let d = &req.data;
            let mut r = k.roles.get(name).cloned().unwrap_or_default();
            if let Some(v) = d.get("bound_service_account_names") {
                r.names = util::comma_list(v);
            }
            if let Some(v) = d.get("bound_service_account_namespaces") {
                r.namespaces = util::comma_list(v);
            }
            if let Some(v) = d.get("audience").and_then(Value::as_str) {
                r.audience = v.to_string();
            }
            if let Some(v) = d.get("alias_name_source").and_then(Value::as_str) {
                r.alias_name_source = v.to_string();
            }
            r.token.update(d)?;
            if r.names.is_empty() {
                return Err(ApiError::bad_request(
                    "\"bound_service_account_names\" can not be empty",
                ));
            }
            if r.namespaces.is_empty() {
                return Err(ApiError::bad_request(
                    "\"bound_service_account_namespaces\" can not be empty",
                ));
            }
            k.roles.insert(name.to_string(), r);
            Ok(Reply::NoContent)
        }
        Op::Delete => {
            k.roles.remove(name);
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// Service-account identity extracted from either token layout.
struct ServiceAccount {
    name: String,
    namespace: String,
    uid: String,
    secret_name: String,
}

fn claim_str(c: &Map<String, Value>, k: &str) -> String {
    c.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

fn service_account(c: &Map<String, Value>) -> Option<ServiceAccount> {
    if let Some(k8s) = c.get("kubernetes.io").and_then(Value::as_object) {
        let sa = k8s.get("serviceaccount")?;
        return Some(ServiceAccount {
            name: sa.get("name")?.as_str()?.to_string(),
            namespace: k8s.get("namespace")?.as_str()?.to_string(),
            uid: sa
                .get("uid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            secret_name: String::new(),
        });
    }
    let name = claim_str(c, "kubernetes.io/serviceaccount/service-account.name");
    let namespace = claim_str(c, "kubernetes.io/serviceaccount/namespace");
    if !name.is_empty() && !namespace.is_empty() {
        return Some(ServiceAccount {
            name,
            namespace,
            uid: claim_str(c, "kubernetes.io/serviceaccount/service-account.uid"),
            secret_name: claim_str(c, "kubernetes.io/serviceaccount/secret.name"),
        });
    }
    // Fall back to the subject: system:serviceaccount:<ns>:<name>.
    let sub = claim_str(c, "sub");
    let parts: Vec<&str> = sub.split(':').collect();
    if parts.len() == 4 && parts[0] == "system" && parts[1] == "serviceaccount" {
        return Some(ServiceAccount {
            name: parts[3].to_string(),
            namespace: parts[2].to_string(),
            uid: String::new(),
            secret_name: String::new(),
        });
    }
    None
}

fn audiences(c: &Map<String, Value>) -> Vec<String> {
    match c.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

fn do_login(core: &mut Core, req: &Req, mount: &str) -> ApiResult<Reply> {
    let role_name = str_field(&req.data, "role").to_string();
    if role_name.is_empty() {
        return Err(ApiError::bad_request("missing role"));
    }
    let jwt = str_field(&req.data, "jwt").to_string();
    if jwt.is_empty() {
        return Err(ApiError::bad_request("missing jwt"));
    }
    let k = mount_state(core, mount)?;
    let role = k
        .roles
        .get(&role_name)
        .cloned()
        .ok_or_else(|| ApiError::bad_request(format!("invalid role name {role_name:?}")))?;
    let cfg = k
        .config
        .clone()
        .ok_or_else(|| ApiError::bad_request("could not load backend configuration"))?;
    let denied = || ApiError::new(403, "permission denied");
    let claims = verify_jwt(&jwt, &cfg.pem_keys, 60).map_err(|e| {
        tracing::debug!(error = %e, "kubernetes login: JWT rejected");
        denied()
    })?;
    if !cfg.disable_iss_validation
        && !cfg.issuer.is_empty()
        && claim_str(&claims, "iss") != cfg.issuer
    {
        return Err(denied());
    }
    if !role.audience.is_empty() && !audiences(&claims).contains(&role.audience) {
        return Err(denied());
    }
    let sa = service_account(&claims).ok_or_else(denied)?;
    if !glob_match(&role.names, &sa.name) {
        return Err(ApiError::new(403, "service account name not authorized"));
    }
    if !glob_match(&role.namespaces, &sa.namespace) {
        return Err(ApiError::new(403, "namespace not authorized"));
    }
    let metadata = BTreeMap::from([
        ("role".to_string(), role_name.clone()),
        ("service_account_name".to_string(), sa.name.clone()),
        (
            "service_account_namespace".to_string(),
            sa.namespace.clone(),
        ),
        (
            "service_account_secret_name".to_string(),
            sa.secret_name.clone(),
        ),
        ("service_account_uid".to_string(), sa.uid.clone()),
    ]);
    let alias = if role.alias_name_source == "serviceaccount_name" || sa.uid.is_empty() {
        format!("{}/{}", sa.namespace, sa.name)
    } else {
        sa.uid.clone()
    };
    login(
        core,
        LoginGrant {
            mount,
            params: &role.token,
            metadata,
            display_name: format!("{}-{}", sa.namespace, sa.name),
            alias,
        },
    )
}
