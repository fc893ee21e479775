//! Database work that runs outside the state lock: revoking a dynamic user, rotating a
//! static role. Handlers queue it on the request; the router and the scheduler run it.

use crate::database::pg::ConnSpec;

/// What a dynamic lease must remember to renew and revoke its user, even if
/// the role or config is later deleted.
#[derive(Debug, Clone)]
pub struct DbLease {
    pub mount: String,
    pub role: String,
    pub username: String,
    pub db_name: String,
    pub conn: ConnSpec,
    pub revocation: Vec<String>,
    pub renew: Vec<String>,
}

/// Background work that must run outside the core lock (database I/O).
#[derive(Debug, Clone)]
pub enum Job {
    /// Drop a dynamic database user whose lease ended.
    RevokeDb {
        lease_id: String,
        lease: DbLease,
        attempt: u32,
    },
    /// Rotate a static role's password.
    RotateStatic { mount: String, role: String },
}
