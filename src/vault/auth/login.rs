//! Logging in with each method, and reading the files a login needs (JWTs, role and
//! secret ids, response-wrapped secret ids).

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::{looks_like_token, read_secret_file, Auth, AuthError, Token};
use crate::config::AuthMethod;
use crate::credential::SecretValue;
use crate::vault::client::Envelope;

impl Auth {
    pub(super) async fn login(&self) -> Result<Token, AuthError> {
        let method = self.method();
        let sent = Instant::now();
        let env = match self.cfg.method {
            AuthMethod::Token => return self.token_from_config().await,
            AuthMethod::Kubernetes | AuthMethod::Jwt => {
                let path = self.cfg.jwt_file.clone().unwrap_or_default();
                // Re-read on every login: projected service account tokens rotate.
                let jwt = read_secret_file(method, "JWT file", &path)?;
                let mut body = json!({ "jwt": jwt.expose() });
                if let Some(role) = &self.cfg.role {
                    body["role"] = json!(role);
                }
                self.client.login(&self.cfg.mount, &body).await
            }
            AuthMethod::AppRole => {
                let role_path = self.cfg.role_id_file.clone().unwrap_or_default();
                let role_id = read_secret_file(method, "role_id file", &role_path)?;
                let mut body = json!({ "role_id": role_id.expose() });
                if let Some(path) = &self.cfg.secret_id_file {
                    body["secret_id"] = json!(self.secret_id(path).await?.expose());
                }
                self.client.login(&self.cfg.mount, &body).await
            }
        }
        .map_err(|e| self.vault_err(e))?;
        self.token_from_login(env, sent)
    }

    pub(super) fn token_from_login(
        &self,
        env: Envelope,
        sent: Instant,
    ) -> Result<Token, AuthError> {
        let auth = env.auth.ok_or_else(|| AuthError::Rejected {
            method: self.method(),
            mount: self.cfg.mount.clone(),
            reason: "login response has no auth block".into(),
        })?;
        if auth.client_token.0.is_empty() {
            let reason = if auth.mfa_requirement.is_some() {
                "login requires MFA, which a sidecar cannot answer; exempt this role from login MFA"
            } else {
                "login response has an empty client_token"
            };
            return Err(AuthError::Rejected {
                method: self.method(),
                mount: self.cfg.mount.clone(),
                reason: reason.into(),
            });
        }
        for w in env.warnings.as_deref().unwrap_or_default() {
            tracing::warn!(method = self.method(), warning = %w, "Vault warned on login");
        }
        Ok(Token::new(
            auth.client_token.0,
            self.next_generation(),
            auth.accessor,
            (auth.lease_duration > 0).then(|| Duration::from_secs(auth.lease_duration)),
            auth.renewable,
            sent,
        )
        .with_policies(auth.policies.as_deref()))
    }

    /// auth=token: the token comes from a file (re-read every time, something may refresh it)
    /// or VAULT_TOKEN; lookup-self tells its TTL.
    pub(super) async fn token_from_config(&self) -> Result<Token, AuthError> {
        let value = match &self.cfg.token_file {
            Some(path) => read_secret_file("token", "token file", path)?,
            None => self.cfg.token.clone().unwrap_or_default(),
        };
        let sent = Instant::now();
        let info = self
            .client
            .lookup_self(&value)
            .await
            .map_err(|e| self.vault_err(e))?;
        // A token that never expires has no expire_time; one in its last second reads ttl 0
        // too, but still has one.
        let never = info.ttl == 0 && info.expire_time.is_none();
        // `ttl` is what is left, rounded to a whole second: keep a second in hand.
        let ttl = Duration::from_secs(info.ttl).saturating_sub(crate::lease::ROUNDING);
        Ok(Token::new(
            value,
            self.next_generation(),
            info.accessor,
            (!never).then_some(ttl),
            info.renewable,
            sent,
        ))
    }

    pub(super) async fn secret_id(&self, path: &Path) -> Result<SecretValue, AuthError> {
        let raw = read_secret_file("approle", "secret_id file", path)?;
        if !looks_like_token(raw.expose()) {
            return Ok(raw);
        }
        if let Some((wrapper, secret_id)) = self
            .unwrapped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            if wrapper == raw {
                return Ok(secret_id);
            }
        }
        let env = self
            .client
            .unwrap(&raw)
            .await
            .map_err(|source| AuthError::Unwrap {
                method: "approle",
                path: path.to_path_buf(),
                source: Box::new(source),
            })?;
        let secret_id = env
            .data
            .get("secret_id")
            .and_then(|v| v.as_str())
            .map(SecretValue::new)
            .ok_or_else(|| AuthError::Rejected {
                method: "approle",
                mount: self.cfg.mount.clone(),
                reason: format!(
                    "the wrapping token in {} does not wrap a secret_id",
                    path.display()
                ),
            })?;
        tracing::info!(file = %path.display(), "unwrapped the response-wrapped secret_id");
        *self.unwrapped.lock().unwrap_or_else(|p| p.into_inner()) = Some((raw, secret_id.clone()));
        Ok(secret_id)
    }
}
