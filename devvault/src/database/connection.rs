//! `database/config/<name>`: connection configurations.

use super::*;

pub async fn config(state: &Arc<State>, req: &Req, mount: &str, name: &str) -> ApiResult<Reply> {
    match req.op {
        Op::Read => {
            let mut core = state.core();
            let b = backend(&mut core, mount)?;
            let c = b.configs.get(name).ok_or_else(ApiError::not_found)?;
            // Like Vault, the password is never returned.
            let mut data = json!({
                "allowed_roles": c.allowed_roles,
                "connection_details": {
                    "connection_url": c.connection_url,
                    "username": c.username,
                },
                "password_policy": c.password_policy,
                "plugin_name": c.plugin_name,
                "plugin_version": "",
                "root_credentials_rotate_statements": c.root_rotation_statements,
                "verify_connection": c.verify_connection,
            });
            // OpenBao 2.7 does not echo verify_connection back.
            if state.flavor == Flavor::OpenBao {
                if let Value::Object(m) = &mut data {
                    m.remove("verify_connection");
                }
            }
            Ok(Reply::Logical(Logical::data(data)))
        }
        Op::Delete => {
            let mut core = state.core();
            let b = backend(&mut core, mount)?;
            if let Some(c) = b.configs.remove(name) {
                state.pools.forget(&c.spec());
            }
            Ok(Reply::NoContent)
        }
        Op::Update | Op::Create => {
            let d = &req.data;
            let existing = {
                let mut core = state.core();
                backend(&mut core, mount)?.configs.get(name).cloned()
            };
            let mut c = existing.clone().unwrap_or(DbConfig {
                plugin_name: String::new(),
                connection_url: String::new(),
                username: String::new(),
                password: String::new(),
                allowed_roles: Vec::new(),
                verify_connection: true,
                password_policy: String::new(),
                root_rotation_statements: Vec::new(),
            });
            let s = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_string);
            if let Some(v) = s("plugin_name") {
                c.plugin_name = v;
            }
            if c.plugin_name.is_empty() {
                return Err(ApiError::bad_request("empty plugin name"));
            }
            if c.plugin_name != PLUGIN {
                return Err(ApiError::bad_request(format!(
                    "error creating database object: devvault supports only {PLUGIN}, not {:?}",
                    c.plugin_name
                )));
            }
            if let Some(v) = s("connection_url") {
                c.connection_url = v;
            }
            if c.connection_url.is_empty() {
                return Err(ApiError::bad_request(
                    "error creating database object: connection_url cannot be empty",
                ));
            }
            if let Some(v) = s("username") {
                c.username = v;
            }
            if let Some(v) = s("password") {
                c.password = v;
            }
            if let Some(v) = d.get("allowed_roles") {
                c.allowed_roles = util::comma_list(v);
            }
            if let Some(v) = s("password_policy") {
                c.password_policy = v;
            }
            if let Some(v) = d.get("root_rotation_statements") {
                c.root_rotation_statements = util::statement_list(v);
            }
            c.verify_connection = bool_field(d, "verify_connection")?.unwrap_or(true);
            if c.verify_connection {
                state.pools.ping(&c.spec()).await.map_err(|e| {
                    ApiError::bad_request(format!(
                        "error creating database object: error verifying - ping: {e}"
                    ))
                })?;
            }
            if let Some(old) = existing {
                state.pools.forget(&old.spec());
            }
            let mut core = state.core();
            backend(&mut core, mount)?
                .configs
                .insert(name.to_string(), c);
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}
