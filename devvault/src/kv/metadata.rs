//! KV v2 `config`, `metadata/` and `subkeys/`.

use super::*;

pub fn config(kv: &mut KvStore, req: &Req) -> ApiResult<Reply> {
    match req.op {
        Op::Read => Ok(Reply::Logical(Logical::data(json!({
            "cas_required": kv.cas_required,
            "delete_version_after": util::go_duration_string(kv.delete_version_after),
            "max_versions": kv.max_versions,
        })))),
        Op::Update | Op::Create => {
            if let Some(v) = req.data.get("max_versions") {
                kv.max_versions = util::parse_int(v).map_err(ApiError::bad_request)?.max(0) as u64;
            }
            if let Some(v) = req.data.get("cas_required") {
                kv.cas_required = util::parse_bool(v).map_err(ApiError::bad_request)?;
            }
            if let Some(v) = req.data.get("delete_version_after") {
                kv.delete_version_after = util::parse_duration(v).map_err(ApiError::bad_request)?;
            }
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

pub fn metadata(kv: &mut KvStore, req: &Req, key: &str, flavor: Flavor) -> ApiResult<Reply> {
    let now = SystemTime::now();
    match req.op {
        Op::List => keys_reply(list_keys(kv.v2.keys(), key)),
        Op::Read => {
            let s = kv.v2.get(key).ok_or_else(ApiError::not_found)?;
            let versions: Map<String, Value> = s
                .versions
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        json!({
                            "created_time": util::rfc3339_nano(v.created_time),
                            "deletion_time": ts(v.deletion_time),
                            "destroyed": v.destroyed,
                        }),
                    )
                })
                .collect();
            let mut data = json!({
                "cas_required": s.cas_required,
                "created_time": util::rfc3339_nano(s.created_time),
                "current_version": s.current_version,
                "custom_metadata": s.custom_metadata,
                "delete_version_after": util::go_duration_string(s.delete_version_after),
                "max_versions": s.max_versions,
                "oldest_version": s.oldest_version,
                "updated_time": util::rfc3339_nano(s.updated_time),
                "versions": versions,
            });
            // OpenBao versions the metadata itself (for check-and-set on metadata writes).
            if flavor == Flavor::OpenBao {
                data["current_metadata_version"] = json!(s.metadata_version);
                data["metadata_cas_required"] = json!(false);
            }
            Ok(Reply::Logical(Logical::data(data)))
        }
        Op::Update | Op::Create | Op::Patch => {
            let s = kv
                .v2
                .entry(key.to_string())
                .or_insert_with(|| Secret::new(now));
            if let Some(v) = req.data.get("max_versions") {
                s.max_versions = util::parse_int(v).map_err(ApiError::bad_request)?.max(0) as u64;
            }
            if let Some(v) = req.data.get("cas_required") {
                s.cas_required = util::parse_bool(v).map_err(ApiError::bad_request)?;
            }
            if let Some(v) = req.data.get("delete_version_after") {
                s.delete_version_after = util::parse_duration(v).map_err(ApiError::bad_request)?;
            }
            if let Some(Value::Object(m)) = req.data.get("custom_metadata") {
                s.custom_metadata = Some(util::string_map(m));
            }
            s.updated_time = now;
            s.metadata_version += 1;
            Ok(Reply::NoContent)
        }
        Op::Delete => {
            kv.v2.remove(key);
            Ok(Reply::NoContent)
        }
    }
}

pub fn subkeys(kv: &mut KvStore, req: &Req, key: &str) -> ApiResult<Reply> {
    if req.op != Op::Read {
        return Err(ApiError::unsupported_operation());
    }
    let s = kv.v2.get(key).ok_or_else(ApiError::not_found)?;
    let v = s
        .versions
        .get(&s.current_version)
        .ok_or_else(ApiError::not_found)?;
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), strip(v))).collect())
            }
            _ => Value::Null,
        }
    }
    let sub = v
        .data
        .as_ref()
        .map(|d| strip(&Value::Object(d.clone())))
        .unwrap_or(Value::Null);
    Ok(Reply::Logical(Logical::data(json!({
        "metadata": version_metadata(s, s.current_version, v),
        "subkeys": sub,
    }))))
}
