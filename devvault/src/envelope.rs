//! The wire format: Vault's `logical.HTTPResponse` envelope and Go's
//! `encoding/json` quirks (struct key order, sorted map keys, HTML escaping,
//! trailing newline). Everything a client parses goes through here.

use serde::Serialize;
use serde_json::Value;

use crate::flavor::Flavor;

/// `logical.HTTPAuth`, field order as Go serialises it.
#[derive(Debug, Clone, Serialize)]
pub struct Auth {
    pub client_token: String,
    pub accessor: String,
    pub policies: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub token_policies: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub identity_policies: Vec<String>,
    /// `null` when empty, like Go's nil map.
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
    pub lease_duration: i64,
    pub renewable: bool,
    pub entity_id: String,
    pub token_type: String,
    pub orphan: bool,
    pub mfa_requirement: Option<Value>,
    pub num_uses: i64,
}

/// `logical.HTTPWrapInfo`.
#[derive(Debug, Clone, Serialize)]
pub struct WrapInfo {
    pub token: String,
    pub accessor: String,
    pub ttl: i64,
    pub creation_time: String,
    pub creation_path: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub wrapped_accessor: String,
}

/// `logical.HTTPResponse`; `mount_type` exists only in newer Vault, so it is
/// skipped entirely for the OpenBao flavour.
#[derive(Debug, Clone, Serialize)]
pub struct HttpResponse {
    pub request_id: String,
    pub lease_id: String,
    pub renewable: bool,
    pub lease_duration: i64,
    pub data: Option<Value>,
    pub wrap_info: Option<WrapInfo>,
    pub warnings: Option<Vec<String>>,
    pub auth: Option<Auth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_type: Option<String>,
}

impl HttpResponse {
    /// An envelope with every field at its zero value.
    pub fn empty(request_id: String, flavor: Flavor, mount_type: &str) -> Self {
        HttpResponse {
            request_id,
            lease_id: String::new(),
            renewable: false,
            lease_duration: 0,
            data: None,
            wrap_info: None,
            warnings: None,
            auth: None,
            mount_type: flavor.mount_type(mount_type),
        }
    }
}

/// `{"errors":[...]}` as `respondError` writes it.
#[derive(Serialize)]
struct ErrorBody<'a> {
    errors: &'a [String],
}

/// `{"errors":[...],"data":...}` (`RespondErrorAndData`).
#[derive(Serialize)]
struct ErrorBodyWithData<'a> {
    errors: &'a [String],
    data: &'a Value,
}

/// Serialises like Go's `json.NewEncoder(w).Encode(v)`: `<`, `>`, `&`, U+2028
/// and U+2029 escaped, trailing newline. serde_json's default `Map` is a
/// BTreeMap, so map keys come out sorted exactly like Go map encoding.
pub fn go_json<T: Serialize>(v: &T) -> Vec<u8> {
    let raw = match serde_json::to_vec(v) {
        Ok(r) => r,
        // Serialising our own plain structs cannot fail; keep a valid body anyway.
        Err(_) => b"{}".to_vec(),
    };
    let mut out = Vec::with_capacity(raw.len() + 16);
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            0xE2 if i + 2 < raw.len()
                && raw[i + 1] == 0x80
                && (raw[i + 2] == 0xA8 || raw[i + 2] == 0xA9) =>
            {
                out.extend_from_slice(if raw[i + 2] == 0xA8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    out.push(b'\n');
    out
}

/// Error body bytes.
pub fn error_body(errors: &[String], data: Option<&Value>) -> Vec<u8> {
    match data {
        Some(d) => go_json(&ErrorBodyWithData { errors, data: d }),
        None => go_json(&ErrorBody { errors }),
    }
}

/// `HTTPSysInjector`: the `data` keys (sorted) are copied to the top level in
/// front of the envelope, as Vault does for `sys/mounts`, `sys/auth`, `sys/policy`...
pub fn inject_top_level(resp: &HttpResponse) -> Vec<u8> {
    let Some(Value::Object(map)) = &resp.data else {
        return go_json(resp);
    };
    let mut head = go_json(&Value::Object(map.clone()));
    let tail = go_json(resp);
    // head = "{...}\n", tail = "{...}\n": splice into "{head..., tail...}\n".
    head.truncate(head.len() - 2);
    if map.is_empty() {
        head.truncate(1);
        head.extend_from_slice(&tail[1..]);
    } else {
        head.push(b',');
        head.extend_from_slice(&tail[1..]);
    }
    head
}

/// go-multierror's rendering of a list of errors.
pub fn multierror(msgs: &[&str]) -> String {
    let points: String = msgs.iter().map(|m| format!("\t* {m}\n")).collect();
    if msgs.len() == 1 {
        format!("1 error occurred:\n{points}\n")
    } else {
        format!("{} errors occurred:\n{points}\n", msgs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_like_go() {
        let out = go_json(&json!({"b": "<a&b>", "a": 1}));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"a\":1,\"b\":\"\\u003ca\\u0026b\\u003e\"}\n"
        );
    }

    #[test]
    fn envelope_key_order() {
        let r = HttpResponse::empty("id".into(), Flavor::Vault, "kv");
        let s = String::from_utf8(go_json(&r)).unwrap();
        assert_eq!(
            s,
            "{\"request_id\":\"id\",\"lease_id\":\"\",\"renewable\":false,\"lease_duration\":0,\"data\":null,\"wrap_info\":null,\"warnings\":null,\"auth\":null,\"mount_type\":\"kv\"}\n"
        );
    }

    #[test]
    fn multierror_text() {
        assert_eq!(
            multierror(&["permission denied", "invalid token"]),
            "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"
        );
        assert_eq!(
            multierror(&["permission denied"]),
            "1 error occurred:\n\t* permission denied\n\n"
        );
    }

    #[test]
    fn injector_puts_data_first() {
        let mut r = HttpResponse::empty("id".into(), Flavor::OpenBao, "");
        r.data = Some(json!({"z": 1, "a": 2}));
        let s = String::from_utf8(inject_top_level(&r)).unwrap();
        assert!(
            s.starts_with("{\"a\":2,\"z\":1,\"request_id\":\"id\""),
            "{s}"
        );
    }
}
