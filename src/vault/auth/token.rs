//! A Vault token and what is known of its life: when it ends, whether that end is final,
//! whether Vault said it is gone.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::credential::SecretValue;
use crate::lease::TokenEnd;

/// A Vault token and what is known of its life.
pub struct Token {
    value: SecretValue,
    /// Increases with every login; lets a worker say "the token I used is bad" without racing
    /// a login that already replaced it.
    pub generation: u64,
    pub accessor: String,
    /// Lifetime at login; 0 for a token that never expires (root, or no TTL).
    pub ttl: Duration,
    pub renewable: bool,
    /// Whether `lookup-self` can tell this token's fate: Vault's `default` policy grants it,
    /// but a token without that policy is refused it alive or dead.
    pub can_lookup: bool,
    life: Mutex<TokenLife>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct TokenLife {
    pub(super) expires_at: Option<Instant>,
    pub(super) renewed_at: Instant,
    pub(super) last_ttl: Duration,
    /// The token cannot be extended any more: its expiry is final.
    pub(super) is_final: bool,
    /// Vault said the token no longer exists; `expires_at` is when we learnt it.
    pub(super) dead: bool,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("generation", &self.generation)
            .field("accessor", &self.accessor)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// `ttl` is `None` for a token that never expires.
    pub fn new(
        value: SecretValue,
        generation: u64,
        accessor: String,
        ttl: Option<Duration>,
        renewable: bool,
        now: Instant,
    ) -> Token {
        let expires_at = ttl.map(|ttl| now + ttl);
        let ttl = ttl.unwrap_or_default();
        Token {
            value,
            generation,
            accessor,
            ttl,
            renewable,
            can_lookup: true,
            life: Mutex::new(TokenLife {
                expires_at,
                renewed_at: now,
                last_ttl: ttl,
                is_final: !renewable && expires_at.is_some(),
                dead: false,
            }),
        }
    }

    /// A token whose policies leave out `default` (and `root`) cannot look itself up.
    pub fn with_policies(mut self, policies: Option<&[String]>) -> Token {
        self.can_lookup = policies.is_none_or(|p| p.iter().any(|n| n == "default" || n == "root"));
        self
    }

    pub fn secret(&self) -> &SecretValue {
        &self.value
    }

    pub(super) fn life(&self) -> TokenLife {
        *self.life.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn expires_at(&self) -> Option<Instant> {
        self.life().expires_at
    }

    /// The token's end when it can no longer be pushed out; `None` while renewals still extend
    /// it (or it never expires).
    pub fn final_end(&self) -> Option<TokenEnd> {
        let life = self.life();
        match (life.is_final, life.expires_at) {
            (true, Some(expires_at)) => Some(TokenEnd {
                expires_at,
                ttl: self.ttl.max(life.last_ttl),
            }),
            _ => None,
        }
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at().is_some_and(|e| e <= now)
    }

    pub(super) fn set_final(&self) {
        self.life.lock().unwrap_or_else(|p| p.into_inner()).is_final = true;
    }

    /// Vault confirmed the token is gone (expired or revoked): so is every lease it created.
    pub fn mark_dead(&self, now: Instant) {
        let mut life = self.life.lock().unwrap_or_else(|p| p.into_inner());
        if !life.dead {
            life.dead = true;
            life.is_final = true;
            life.expires_at = Some(life.expires_at.map_or(now, |e| e.min(now)));
        }
    }

    pub fn is_dead(&self) -> bool {
        self.life().dead
    }

    /// Whether this is the same Vault token as `other` (a token file read again gives a new
    /// `Token` for the same secret).
    pub fn same_as(&self, other: &Token) -> bool {
        self.value == other.value
    }

    pub(super) fn renewed(
        &self,
        now: Instant,
        asked: Duration,
        granted: Duration,
        renewable: bool,
    ) {
        let mut life = self.life.lock().unwrap_or_else(|p| p.into_inner());
        life.renewed_at = now;
        life.last_ttl = granted;
        // Near its max, each renewal may pull the token's end in by up to a second (Vault
        // rounds the capped TTL), and the answer to one may be lost: keep a second in hand.
        life.expires_at = Some(now + granted.saturating_sub(crate::lease::ROUNDING));
        if !renewable || granted < asked {
            life.is_final = true;
        }
    }
}
