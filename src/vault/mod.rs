//! Talking to Vault: the HTTP [`client`], logins and the token's life in [`auth`], and the
//! [`Backend`] seam that secret workers use, so their timing can be tested against a fake Vault
//! in virtual time.

pub mod auth;
pub mod client;
mod error;
mod response;
pub mod transport;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use auth::{Auth, AuthError, AuthEvent, Token};
pub use client::{Client, Envelope, MountInfo, VaultError};

use crate::credential::SecretValue;

/// What a secret worker needs from Vault. [`Live`] is the real one.
pub trait Backend: Send + Sync + 'static {
    /// The current token, logging in when needed.
    fn token(&self) -> impl Future<Output = Result<Arc<Token>, AuthError>> + Send;
    /// Log in again because the token of generation `stale` was refused or is ending.
    fn relogin(&self, stale: u64) -> impl Future<Output = Result<Arc<Token>, AuthError>> + Send;
    /// Ticks whenever a new token is in place or a token's known end moves.
    fn token_changes(&self) -> watch::Receiver<u64>;
    /// After a 403 with `token`: `true` when the token is dead (then so are its leases),
    /// `false` when it is alive and the policy refused the request.
    fn confirm_dead(
        &self,
        token: &Arc<Token>,
        refusal: &VaultError,
    ) -> impl Future<Output = Result<bool, AuthError>> + Send;
    fn read(
        &self,
        token: &SecretValue,
        path: &str,
    ) -> impl Future<Output = Result<Envelope, VaultError>> + Send;
    fn renew_lease(
        &self,
        token: &SecretValue,
        lease_id: &str,
        increment: Duration,
    ) -> impl Future<Output = Result<Envelope, VaultError>> + Send;
    fn revoke_lease(
        &self,
        token: &SecretValue,
        lease_id: &str,
    ) -> impl Future<Output = Result<(), VaultError>> + Send;
    fn rotate_role(
        &self,
        token: &SecretValue,
        path: &str,
    ) -> impl Future<Output = Result<(), VaultError>> + Send;
    fn mount_info(
        &self,
        token: &SecretValue,
        path: &str,
    ) -> impl Future<Output = Result<MountInfo, VaultError>> + Send;
}

/// The real Vault behind a [`Client`] and an [`Auth`].
pub struct Live {
    pub client: Client,
    pub auth: Arc<Auth>,
}

impl Backend for Live {
    async fn token(&self) -> Result<Arc<Token>, AuthError> {
        self.auth.token().await
    }

    async fn relogin(&self, stale: u64) -> Result<Arc<Token>, AuthError> {
        self.auth.relogin(stale).await
    }

    fn token_changes(&self) -> watch::Receiver<u64> {
        self.auth.subscribe()
    }

    async fn confirm_dead(
        &self,
        token: &Arc<Token>,
        refusal: &VaultError,
    ) -> Result<bool, AuthError> {
        self.auth.confirm_dead(token, refusal).await
    }

    async fn read(&self, token: &SecretValue, path: &str) -> Result<Envelope, VaultError> {
        self.client.read(token, path).await
    }

    async fn renew_lease(
        &self,
        token: &SecretValue,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Envelope, VaultError> {
        self.client.renew_lease(token, lease_id, increment).await
    }

    async fn revoke_lease(&self, token: &SecretValue, lease_id: &str) -> Result<(), VaultError> {
        self.client.revoke_lease(token, lease_id).await
    }

    async fn rotate_role(&self, token: &SecretValue, path: &str) -> Result<(), VaultError> {
        self.client.rotate_role(token, path).await
    }

    async fn mount_info(&self, token: &SecretValue, path: &str) -> Result<MountInfo, VaultError> {
        self.client.mount_info(token, path).await
    }
}
