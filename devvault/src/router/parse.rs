//! Reading a request the way Vault's `http/` package does: which paths need no
//! token or need `sudo`, the client token, the body, and the wrap TTL header.

use super::*;

/// Paths that need no token.
pub fn unauthenticated(path: &str) -> bool {
    matches!(
        path,
        "sys/health" | "sys/seal-status" | "sys/leader" | "sys/init" | "sys/wrapping/unwrap"
    ) || path.starts_with("sys/internal/ui/mounts")
        || is_login(path)
}

/// `auth/<mount>/login` (and `login/<x>`).
pub fn is_login(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("auth/") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    parts.len() >= 2 && parts[1] == "login" && parts[0] != "token"
}

/// Paths that additionally need `sudo` for non-root tokens.
pub fn needs_sudo(path: &str, op: Op) -> bool {
    (path.starts_with("sys/auth/") && op != Op::Read)
        || path.starts_with("sys/leases/revoke-prefix")
        || path.starts_with("sys/leases/revoke-force")
        || path == "auth/token/revoke-orphan"
        || path == "sys/seal"
}

pub fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The client token: `X-Vault-Token` wins, else `Authorization: Bearer`.
pub fn token_of(h: &HeaderMap) -> Option<String> {
    if let Some(t) = header(h, "x-vault-token").filter(|t| !t.is_empty()) {
        return Some(t.to_string());
    }
    header(h, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Parses the body: JSON object, or a form when so declared.
pub fn parse_body(content_type: &str, body: &[u8]) -> ApiResult<Map<String, Value>> {
    let trimmed: &[u8] = body.trim_ascii();
    if trimmed.is_empty() {
        return Ok(Map::new());
    }
    if content_type.starts_with("application/x-www-form-urlencoded")
        && !matches!(trimmed.first(), Some(b'{') | Some(b'['))
    {
        let s = String::from_utf8_lossy(trimmed);
        return Ok(util::parse_query(&s)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect());
    }
    match serde_json::from_slice::<Value>(trimmed) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Ok(Map::new()),
        _ => Err(ApiError::bad_json()),
    }
}

pub fn parse_wrap_ttl(h: &HeaderMap) -> ApiResult<Option<Duration>> {
    let Some(v) = header(h, "x-vault-wrap-ttl") else {
        return Ok(None);
    };
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.starts_with('-') {
        return Err(ApiError::bad_request(
            "error parsing X-Vault-Wrap-TTL header: requested wrap ttl cannot be negative",
        ));
    }
    let d = util::parse_duration_str(v).map_err(|e| {
        ApiError::bad_request(format!("error parsing X-Vault-Wrap-TTL header: {e}"))
    })?;
    Ok(if d.is_zero() { None } else { Some(d) })
}
