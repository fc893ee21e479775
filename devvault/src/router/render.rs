//! Turning a reply into the HTTP answer: the JSON envelope, response wrapping,
//! and the rendering of every reply kind.

use super::*;

fn envelope_of(l: &Logical, request_id: &str, flavor: Flavor, mount_type: &str) -> HttpResponse {
    let mt = l.mount_type.as_deref().unwrap_or(mount_type);
    let mut r = HttpResponse::empty(request_id.to_string(), flavor, mt);
    r.lease_id = l.lease_id.clone();
    r.renewable = l.renewable;
    r.lease_duration = l.lease_duration;
    r.data = l.data.clone();
    r.warnings = if l.warnings.is_empty() {
        None
    } else {
        Some(l.warnings.clone())
    };
    r.auth = l.auth.clone();
    r
}

pub fn wrap_reply(
    state: &Arc<State>,
    req: &Req,
    l: &Logical,
    mount_type: &str,
    ttl: Duration,
) -> Reply {
    let body = serialize_logical(l, &req.request_id, state.flavor, mount_type);
    let wrapped_accessor = l
        .auth
        .as_ref()
        .map(|a| a.accessor.clone())
        .or_else(|| {
            l.data
                .as_ref()
                .and_then(|d| d.get("secret_id_accessor"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    let info = {
        let mut core = state.core();
        let prefix = core.flavor.token_prefix();
        core.wraps
            .wrap(prefix, body, ttl, &req.path, wrapped_accessor)
    };
    state.wake.notify_one();
    Reply::Wrapped(info)
}

fn serialize_logical(l: &Logical, request_id: &str, flavor: Flavor, mount_type: &str) -> Vec<u8> {
    let env = envelope_of(l, request_id, flavor, mount_type);
    if l.inject {
        envelope::inject_top_level(&env)
    } else {
        envelope::go_json(&env)
    }
}

pub fn render(
    state: &Arc<State>,
    reply: Reply,
    request_id: &str,
    mount_type: &str,
    _path: &str,
) -> HttpOut {
    let flavor = state.flavor;
    match reply {
        Reply::NoContent => HttpOut {
            status: 204,
            headers: Vec::new(),
            body: Vec::new(),
        },
        Reply::Accepted => HttpOut {
            status: 202,
            headers: Vec::new(),
            body: Vec::new(),
        },
        Reply::Raw { status, body } => HttpOut {
            status,
            headers: Vec::new(),
            body,
        },
        Reply::Wrapped(info) => {
            // Wrapped envelopes carry only wrap_info; request_id stays empty
            // (Vault's respondLogical does not set it on this branch).
            let mut r = HttpResponse::empty(String::new(), flavor, "");
            r.wrap_info = Some(info);
            HttpOut {
                status: 200,
                headers: Vec::new(),
                body: envelope::go_json(&r),
            }
        }
        Reply::Unwrapped(body) => {
            if body.is_empty() {
                HttpOut {
                    status: 204,
                    headers: Vec::new(),
                    body,
                }
            } else {
                HttpOut {
                    status: 200,
                    headers: Vec::new(),
                    body,
                }
            }
        }
        Reply::Logical(l) => {
            let status = l.status.unwrap_or(200);
            // RespondWithStatusCode bodies never get mount_type filled in.
            let mt = if l.status.is_some() { "" } else { mount_type };
            let mut l = l;
            if l.status.is_some() {
                l.mount_type = None;
            }
            HttpOut {
                status,
                headers: Vec::new(),
                body: serialize_logical(&l, request_id, flavor, mt),
            }
        }
    }
}
