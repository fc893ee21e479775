//! Auth methods. Each login ends in [`login`], which mints an orphan service
//! token from the role's `token_*` parameters and answers with the full
//! `auth` block (`mount_type: ""`, like a real login).

pub mod approle;
pub mod jwt;
pub mod kubernetes;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::exchange::{Logical, Reply};
use crate::flavor::Flavor;
use crate::state::Core;
use crate::tokens::{self, TokenSpec};
use crate::util;

/// The `tokenutil.TokenParams` every role carries.
#[derive(Debug, Clone, Default)]
pub struct TokenParams {
    pub policies: Vec<String>,
    pub ttl: Duration,
    pub max_ttl: Duration,
    pub period: Duration,
    pub explicit_max_ttl: Duration,
    pub num_uses: i64,
    pub no_default_policy: bool,
    pub token_type: String,
    /// Set when the role was written with the deprecated `policies` field.
    pub legacy_policies: bool,
}

fn dur(d: &Map<String, Value>, keys: &[&str]) -> ApiResult<Option<Duration>> {
    for k in keys {
        if let Some(v) = d.get(*k) {
            return util::parse_duration(v)
                .map(Some)
                .map_err(ApiError::bad_request);
        }
    }
    Ok(None)
}

impl TokenParams {
    /// Applies `token_*` fields (and their deprecated aliases) from a role write.
    pub fn update(&mut self, d: &Map<String, Value>) -> ApiResult<()> {
        if let Some(v) = d.get("token_policies") {
            self.policies = util::comma_list(v);
        } else if let Some(v) = d.get("policies") {
            self.policies = util::comma_list(v);
            self.legacy_policies = true;
        }
        if let Some(v) = dur(d, &["token_ttl", "ttl"])? {
            self.ttl = v;
        }
        if let Some(v) = dur(d, &["token_max_ttl", "max_ttl"])? {
            self.max_ttl = v;
        }
        if let Some(v) = dur(d, &["token_period", "period"])? {
            self.period = v;
        }
        if let Some(v) = dur(d, &["token_explicit_max_ttl"])? {
            self.explicit_max_ttl = v;
        }
        if let Some(v) = d.get("token_num_uses") {
            self.num_uses = util::parse_int(v).map_err(ApiError::bad_request)?;
        }
        if let Some(v) = d.get("token_no_default_policy") {
            self.no_default_policy = util::parse_bool(v).map_err(ApiError::bad_request)?;
        }
        if let Some(v) = d.get("token_type").and_then(Value::as_str) {
            self.token_type = v.to_string();
        }
        if !self.max_ttl.is_zero() && self.ttl > self.max_ttl {
            return Err(ApiError::bad_request(
                "'token_ttl' cannot be greater than 'token_max_ttl'",
            ));
        }
        Ok(())
    }

    /// `PopulateTokenData`: the fields a role read returns.
    pub fn populate(&self, m: &mut Map<String, Value>, flavor: Flavor) {
        m.insert("token_bound_cidrs".into(), json!([]));
        if flavor == Flavor::OpenBao {
            m.insert("token_strictly_bind_ip".into(), json!(false));
        }
        m.insert(
            "token_explicit_max_ttl".into(),
            json!(util::secs(self.explicit_max_ttl)),
        );
        m.insert("token_max_ttl".into(), json!(util::secs(self.max_ttl)));
        m.insert(
            "token_no_default_policy".into(),
            json!(self.no_default_policy),
        );
        m.insert("token_num_uses".into(), json!(self.num_uses));
        m.insert("token_period".into(), json!(util::secs(self.period)));
        m.insert("token_policies".into(), json!(self.policies));
        m.insert(
            "token_type".into(),
            json!(if self.token_type.is_empty() {
                "default"
            } else {
                &self.token_type
            }),
        );
        m.insert("token_ttl".into(), json!(util::secs(self.ttl)));
        if self.legacy_policies {
            m.insert("policies".into(), json!(self.policies));
        }
    }
}

/// What an auth method hands to [`login`] after verifying credentials.
pub struct LoginGrant<'a> {
    pub mount: &'a str,
    pub params: &'a TokenParams,
    pub metadata: BTreeMap<String, String>,
    /// The method's `auth.DisplayName` (prefixed with the mount path).
    pub display_name: String,
    /// Entity alias name (role id, service-account uid, user claim...).
    pub alias: String,
}

/// Issues the login token and builds the response.
pub fn login(core: &mut Core, g: LoginGrant<'_>) -> ApiResult<Reply> {
    let accessor = core
        .auth_mounts
        .get(g.mount)
        .map(|m| m.accessor.clone())
        .unwrap_or_default();
    let entity_id = core.entity_for(&accessor, &g.alias);
    let source = g.mount.replace('/', "-");
    let display_name = format!("{source}{}", g.display_name)
        .trim_end_matches('-')
        .to_string();
    let (entry, warnings) = tokens::issue(
        core,
        TokenSpec {
            policies: g.params.policies.clone(),
            no_default_policy: g.params.no_default_policy,
            meta: g.metadata,
            display_name,
            path: format!("auth/{}login", g.mount),
            parent: None,
            ttl: g.params.ttl,
            max_ttl: g.params.max_ttl,
            explicit_max_ttl: g.params.explicit_max_ttl,
            period: g.params.period,
            renewable: true,
            num_uses: g.params.num_uses,
            entity_id,
            role: None,
            mount_accessor: accessor,
        },
    )?;
    Ok(Reply::Logical(Logical {
        auth: Some(entry.auth_block()),
        warnings,
        mount_type: Some(String::new()),
        ..Default::default()
    }))
}

/// Outcome of verifying a JWT against a set of PEM public keys.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("no known key successfully validated the token signature")]
    Signature,
    #[error("token is expired (exp)")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("unsupported signing algorithm {0:?}")]
    Algorithm(String),
}

/// Whether `pem` holds a public key jsonwebtoken can use (RSA or EC).
pub fn pem_is_public_key(pem: &str) -> bool {
    jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).is_ok()
        || jsonwebtoken::DecodingKey::from_ec_pem(pem.as_bytes()).is_ok()
}

/// Verifies signature, `exp` and `nbf` (when present) and returns the claims.
/// This stands in for Kubernetes' TokenReview and for JWKS validation.
pub fn verify_jwt(
    token: &str,
    pem_keys: &[String],
    leeway: u64,
) -> Result<Map<String, Value>, JwtError> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
    let rsa = matches!(
        header.alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
    );
    let ec = matches!(header.alg, Algorithm::ES256 | Algorithm::ES384);
    if !rsa && !ec {
        return Err(JwtError::Algorithm(format!("{:?}", header.alg)));
    }
    let mut validation = Validation::new(header.alg);
    validation.set_required_spec_claims::<&str>(&[]);
    validation.validate_aud = false;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.leeway = leeway;
    let mut last = JwtError::Signature;
    for pem in pem_keys {
        let key = if rsa {
            DecodingKey::from_rsa_pem(pem.as_bytes())
        } else {
            DecodingKey::from_ec_pem(pem.as_bytes())
        };
        let Ok(key) = key else { continue };
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind;
                last = match e.kind() {
                    ErrorKind::ExpiredSignature => JwtError::Expired,
                    ErrorKind::ImmatureSignature => JwtError::NotYetValid,
                    ErrorKind::InvalidSignature => JwtError::Signature,
                    other => JwtError::Malformed(format!("{other:?}")),
                };
                // A valid signature with bad claims is final; a bad signature tries the next key.
                if !matches!(last, JwtError::Signature) {
                    return Err(last);
                }
            }
        }
    }
    Err(last)
}

/// Glob match used by role bindings: `*` alone matches everything; a
/// trailing `*` is a prefix match.
pub fn glob_match(patterns: &[String], value: &str) -> bool {
    patterns.iter().any(|p| {
        p == "*"
            || p == value
            || p.strip_suffix('*')
                .is_some_and(|pre| value.starts_with(pre))
    })
}

/// Reads a string field.
pub fn str_field<'a>(d: &'a Map<String, Value>, k: &str) -> &'a str {
    d.get(k).and_then(Value::as_str).unwrap_or("")
}
