//! KV v2 `data/`, `delete/`, `undelete/` and `destroy/`: reads, check-and-set
//! writes, and the per-version delete states.

use super::*;

fn cas_of(req: &Req) -> ApiResult<Option<u64>> {
    let Some(opts) = req.data.get("options") else {
        return Ok(None);
    };
    let Some(cas) = opts.get("cas") else {
        return Ok(None);
    };
    if cas.is_null() {
        return Ok(None);
    }
    util::parse_int(cas)
        .map(|n| Some(n.max(0) as u64))
        .map_err(|_| ApiError::bad_request("error parsing check-and-set parameter"))
}

pub fn data(kv: &mut KvStore, req: &Req, key: &str) -> ApiResult<Reply> {
    let now = SystemTime::now();
    match req.op {
        Op::Read => {
            let s = kv.v2.get(key).ok_or_else(ApiError::not_found)?;
            let want = match req.data.get("version") {
                Some(v) => util::parse_int(v).map_err(ApiError::bad_request)?,
                None => 0,
            };
            let n = if want > 0 {
                want as u64
            } else {
                s.current_version
            };
            let v = s.versions.get(&n).ok_or_else(ApiError::not_found)?;
            let deleted = v.deletion_time.is_some_and(|t| t <= now);
            let body = json!({
                "data": if deleted || v.destroyed { Value::Null } else { json!(v.data) },
                "metadata": version_metadata(s, n, v),
            });
            let mut l = Logical::data(body);
            if deleted || v.destroyed {
                l.status = Some(404);
            }
            Ok(Reply::Logical(l))
        }
        Op::Update | Op::Create | Op::Patch => write(kv, req, key, now),
        Op::Delete => {
            if let Some(s) = kv.v2.get_mut(key) {
                let cur = s.current_version;
                if let Some(v) = s.versions.get_mut(&cur) {
                    if v.deletion_time.is_none_or(|t| t > now) && !v.destroyed {
                        v.deletion_time = Some(now);
                    }
                }
                s.updated_time = now;
            }
            Ok(Reply::NoContent)
        }
        Op::List => Err(ApiError::unsupported_operation()),
    }
}

fn write(kv: &mut KvStore, req: &Req, key: &str, now: SystemTime) -> ApiResult<Reply> {
    let patch = req.op == Op::Patch;
    let new_data = match req.data.get("data") {
        Some(Value::Object(m)) => m.clone(),
        _ => return Err(ApiError::bad_request("no data provided")),
    };
    let cas = cas_of(req)?;
    let mount_cas = kv.cas_required;
    let mount_max = kv.max_versions;
    let mount_dva = kv.delete_version_after;
    if patch {
        let Some(s) = kv.v2.get(key) else {
            return Ok(Reply::Raw {
                status: 404,
                body: Vec::new(),
            });
        };
        let Some(cur) = s.versions.get(&s.current_version) else {
            return Ok(Reply::Raw {
                status: 404,
                body: Vec::new(),
            });
        };
        if cur.destroyed || cur.deletion_time.is_some_and(|t| t <= now) {
            let mut l = Logical::data(version_metadata(s, s.current_version, cur));
            l.status = Some(404);
            return Ok(Reply::Logical(l));
        }
    }
    let s = kv
        .v2
        .entry(key.to_string())
        .or_insert_with(|| Secret::new(now));
    if (mount_cas || s.cas_required) && cas.is_none() {
        return Err(ApiError::bad_request(
            "check-and-set parameter required for this call",
        ));
    }
    if let Some(c) = cas {
        if c != s.current_version {
            return Err(ApiError::bad_request(
                "check-and-set parameter did not match the current version",
            ));
        }
    }
    let merged = if patch {
        let mut base = s
            .versions
            .get(&s.current_version)
            .and_then(|v| v.data.clone())
            .unwrap_or_default();
        for (k, v) in new_data {
            if v.is_null() {
                base.remove(&k);
            } else {
                base.insert(k, v);
            }
        }
        base
    } else {
        new_data
    };
    let n = s.current_version + 1;
    let dva = if s.delete_version_after.is_zero() {
        mount_dva
    } else {
        s.delete_version_after
    };
    s.versions.insert(
        n,
        Version {
            data: Some(merged),
            created_time: now,
            deletion_time: if dva.is_zero() { None } else { Some(now + dva) },
            destroyed: false,
        },
    );
    s.current_version = n;
    s.updated_time = now;
    let max = if s.max_versions > 0 {
        s.max_versions
    } else if mount_max > 0 {
        mount_max
    } else {
        10
    };
    // Vault's `KeyMetadata.AddVersion`: `oldest_version` stays 0 until a version is pruned.
    if n - s.oldest_version >= max {
        let last_dropped = n - max;
        s.versions.retain(|v, _| *v > last_dropped);
        s.oldest_version = last_dropped + 1;
    }
    let v = s
        .versions
        .get(&n)
        .cloned()
        .ok_or_else(|| ApiError::internal("version vanished"))?;
    let mut meta = version_metadata(s, n, &v);
    if let Value::Object(m) = &mut meta {
        m.insert("version".into(), json!(n));
    }
    Ok(Reply::Logical(Logical::data(meta)))
}

fn versions_list(req: &Req) -> ApiResult<Vec<u64>> {
    let vs: Vec<u64> = match req.data.get("versions") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| util::parse_int(v).ok())
            .map(|n| n as u64)
            .collect(),
        Some(v @ Value::String(_)) => util::comma_list(v)
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect(),
        Some(Value::Number(n)) => n.as_u64().into_iter().collect(),
        _ => Vec::new(),
    };
    if vs.is_empty() {
        return Err(ApiError::bad_request("no version number provided"));
    }
    Ok(vs)
}

pub fn versions_op(kv: &mut KvStore, req: &Req, kind: &str, key: &str) -> ApiResult<Reply> {
    if !matches!(req.op, Op::Update | Op::Create) {
        return Err(ApiError::unsupported_operation());
    }
    let now = SystemTime::now();
    let versions = versions_list(req)?;
    let Some(s) = kv.v2.get_mut(key) else {
        return Ok(Reply::NoContent);
    };
    for n in versions {
        let Some(v) = s.versions.get_mut(&n) else {
            continue;
        };
        match kind {
            "delete" if !v.destroyed && v.deletion_time.is_none_or(|t| t > now) => {
                v.deletion_time = Some(now)
            }
            "undelete" if !v.destroyed => v.deletion_time = None,
            "destroy" => {
                v.destroyed = true;
                v.data = None;
            }
            _ => {}
        }
    }
    s.updated_time = now;
    Ok(Reply::NoContent)
}
