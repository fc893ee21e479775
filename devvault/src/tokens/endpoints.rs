//! The `auth/token/*` HTTP endpoints on top of the store: create, lookup,
//! renew, revoke and the accessor listing.

use super::*;

fn token_reply(e: &TokenEntry, warnings: Vec<String>) -> Reply {
    Reply::Logical(Logical {
        auth: Some(e.auth_block()),
        warnings,
        ..Default::default()
    })
}

fn increment_of(data: &Map<String, Value>) -> ApiResult<Duration> {
    data.get("increment")
        .map(util::parse_duration)
        .transpose()
        .map_err(ApiError::bad_request)
        .map(|d| d.unwrap_or_default())
}

fn str_field<'a>(data: &'a Map<String, Value>, key: &str) -> &'a str {
    data.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Dispatches `auth/token/<rest>`.
pub fn handle(core: &mut Core, req: &mut Req, rest: &str) -> ApiResult<Reply> {
    use crate::acl::Op;
    let now = SystemTime::now();
    let caller = req.caller.clone();
    let flavor = core.flavor;
    let write = matches!(req.op, Op::Update | Op::Create);
    match rest {
        "create" | "create-orphan" if write => create(core, req, rest == "create-orphan"),
        "lookup-self" if matches!(req.op, Op::Read | Op::Update) => {
            let c = caller.ok_or_else(|| ApiError::invalid_token(flavor))?;
            let e = core
                .tokens
                .live(&c.id, now)
                .ok_or_else(|| ApiError::invalid_token(flavor))?;
            Ok(Reply::Logical(Logical::data(e.lookup_data(now, false))))
        }
        "lookup" if matches!(req.op, Op::Read | Op::Update) => {
            let t = str_field(&req.data, "token");
            let e = core
                .tokens
                .live(t, now)
                .ok_or_else(|| ApiError::new(403, "bad token"))?;
            Ok(Reply::Logical(Logical::data(e.lookup_data(now, false))))
        }
        "lookup-accessor" if write => {
            let a = str_field(&req.data, "accessor");
            let id = core
                .tokens
                .id_by_accessor(a)
                .ok_or_else(|| ApiError::bad_request("invalid accessor"))?;
            let e = core
                .tokens
                .live(&id, now)
                .ok_or_else(|| ApiError::bad_request("invalid accessor"))?;
            Ok(Reply::Logical(Logical::data(e.lookup_data(now, true))))
        }
        "renew-self" if write => {
            let c = caller.ok_or_else(|| ApiError::invalid_token(flavor))?;
            let inc = increment_of(&req.data)?;
            let (e, w) = renew(core, &c.id, inc)?;
            Ok(token_reply(&e, w))
        }
        "renew" if write => {
            let t = str_field(&req.data, "token").to_string();
            if t.is_empty() {
                return Err(ApiError::bad_request("missing token"));
            }
            let inc = increment_of(&req.data)?;
            let (e, w) = renew(core, &t, inc).map_err(|e| {
                if e.status == 403 {
                    ApiError::bad_request("invalid token")
                } else {
                    e
                }
            })?;
            Ok(token_reply(&e, w))
        }
        "renew-accessor" if write => {
            let a = str_field(&req.data, "accessor");
            let id = core
                .tokens
                .id_by_accessor(a)
                .ok_or_else(|| ApiError::bad_request("invalid accessor"))?;
            let inc = increment_of(&req.data)?;
            let (e, w) = renew(core, &id, inc)?;
            let mut auth = e.auth_block();
            auth.client_token = String::new();
            Ok(Reply::Logical(Logical {
                auth: Some(auth),
                warnings: w,
                ..Default::default()
            }))
        }
        "revoke-self" if write => {
            let c = caller.ok_or_else(|| ApiError::invalid_token(flavor))?;
            req.jobs.extend(core.revoke_token_tree(&c.id));
            Ok(Reply::NoContent)
        }
        "revoke" if write => {
            let t = str_field(&req.data, "token").to_string();
            if t.is_empty() {
                return Err(ApiError::bad_request("missing token"));
            }
            req.jobs.extend(core.revoke_token_tree(&t));
            Ok(Reply::NoContent)
        }
        "revoke-orphan" if write => {
            let t = str_field(&req.data, "token").to_string();
            req.jobs.extend(core.revoke_token_orphan(&t));
            Ok(Reply::NoContent)
        }
        "revoke-accessor" if write => {
            let a = str_field(&req.data, "accessor");
            let id = core
                .tokens
                .id_by_accessor(a)
                .ok_or_else(|| ApiError::bad_request("invalid accessor"))?;
            req.jobs.extend(core.revoke_token_tree(&id));
            Ok(Reply::NoContent)
        }
        "accessors/" if req.op == Op::List => {
            let keys: Vec<String> = core.tokens.all().map(|e| e.accessor.clone()).collect();
            Ok(Reply::Logical(Logical::data(json!({ "keys": keys }))))
        }
        r if r.starts_with("lookup/") && req.op == Op::Read => {
            let t = &r["lookup/".len()..];
            let e = core
                .tokens
                .live(t, now)
                .ok_or_else(|| ApiError::new(403, "bad token"))?;
            Ok(Reply::Logical(Logical::data(e.lookup_data(now, false))))
        }
        "create" | "create-orphan" | "lookup-self" | "lookup" | "lookup-accessor"
        | "renew-self" | "renew" | "renew-accessor" | "revoke-self" | "revoke"
        | "revoke-orphan" | "revoke-accessor" => Err(ApiError::unsupported_operation()),
        _ => Err(ApiError::unsupported_path()),
    }
}

fn create(core: &mut Core, req: &mut Req, orphan_path: bool) -> ApiResult<Reply> {
    let flavor: Flavor = core.flavor;
    let caller = req
        .caller
        .clone()
        .ok_or_else(|| ApiError::invalid_token(flavor))?;
    let d = &req.data;
    let caller_root = caller.policies.iter().any(|p| p == "root");
    let mut policies = d.get("policies").map(util::comma_list).unwrap_or_default();
    let no_parent = d
        .get("no_parent")
        .map(util::parse_bool)
        .transpose()
        .map_err(ApiError::bad_request)?
        .unwrap_or(false);
    if no_parent && !caller_root && !orphan_path {
        return Err(ApiError::bad_request(
            "root or sudo privileges required to create orphan token",
        ));
    }
    if policies.is_empty() {
        policies = caller.policies.clone();
    } else if !caller_root
        && policies
            .iter()
            .any(|p| p != "default" && !caller.policies.contains(p))
    {
        return Err(ApiError::bad_request(
            "child policies must be subset of parent",
        ));
    }
    let dur = |k: &str| -> ApiResult<Duration> {
        d.get(k)
            .map(util::parse_duration)
            .transpose()
            .map_err(ApiError::bad_request)
            .map(|x| x.unwrap_or_default())
    };
    let ttl = dur("ttl")?;
    let explicit_max_ttl = dur("explicit_max_ttl")?;
    let period = dur("period")?;
    let renewable = d
        .get("renewable")
        .map(util::parse_bool)
        .transpose()
        .map_err(ApiError::bad_request)?
        .unwrap_or(true);
    let num_uses = d
        .get("num_uses")
        .map(util::parse_int)
        .transpose()
        .map_err(ApiError::bad_request)?
        .unwrap_or(0);
    if num_uses < 0 {
        return Err(ApiError::bad_request("number of uses cannot be negative"));
    }
    let no_default_policy = d
        .get("no_default_policy")
        .map(util::parse_bool)
        .transpose()
        .map_err(ApiError::bad_request)?
        .unwrap_or(false);
    let meta: BTreeMap<String, String> = match d.get("meta") {
        Some(Value::Object(m)) => util::string_map(m),
        _ => BTreeMap::new(),
    };
    let display = str_field(d, "display_name");
    let display_name = if display.is_empty() {
        "token".to_string()
    } else {
        format!(
            "token-{}",
            display
                .to_lowercase()
                .replace(|c: char| !c.is_alphanumeric() && c != '-', "-")
        )
    };
    let mut warnings: Vec<String> = util::sanitize_policies(policies.clone(), false)
        .into_iter()
        .filter(|p| p != "root" && p != "default" && !core.policies.contains_key(p))
        .map(|p| format!("Policy {p:?} does not exist"))
        .collect();
    let token_mount = core
        .auth_mounts
        .get("token/")
        .map(|m| m.accessor.clone())
        .unwrap_or_default();
    let (entry, w) = issue(
        core,
        TokenSpec {
            policies,
            no_default_policy,
            meta,
            display_name,
            path: format!(
                "auth/token/{}",
                if orphan_path {
                    "create-orphan"
                } else {
                    "create"
                }
            ),
            parent: if no_parent || orphan_path {
                None
            } else {
                Some(caller.id.clone())
            },
            ttl,
            max_ttl: Duration::ZERO,
            explicit_max_ttl,
            period,
            renewable,
            num_uses,
            entity_id: String::new(),
            role: None,
            mount_accessor: token_mount,
        },
    )?;
    warnings.extend(w);
    Ok(token_reply(&entry, warnings))
}
