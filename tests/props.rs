//! Property tests for the two parsers that take outside input: the configuration (flags,
//! environment, TOML file) and the decoding of Vault's responses (through the real HTTP client,
//! against a canned-response server on loopback).
//!
//! Bounded for CI: a fixed number of cases per property ([`CASES`]), a cap on shrinking, and no
//! failure-persistence files. A failure prints the minimal input proptest found.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{json, Value};
use vault_rotator::config::{Config, ConfigError};
use vault_rotator::credential::SecretValue;
use vault_rotator::vault::client::{Client, VaultError, MAX_RESPONSE_BYTES};

const CASES: u32 = 256;

fn bounded(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2048,
        max_shrink_time: 20_000,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// A directory that exists for the output file, shared by every case.
fn out_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn base_args() -> Vec<String> {
    let out = out_dir().join("db.json");
    [
        "vault-rotator",
        "--vault-addr",
        "http://127.0.0.1:8200",
        "--secret",
        "database/creds/app",
        "--output",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

fn load(args: &[String], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    Config::load(args.iter().cloned(), &lookup)
}

/// A duration as an operator writes it, and its value.
fn duration_text() -> impl Strategy<Value = (String, Duration)> {
    (0u64..3, 0u64..60, 1u64..60, 0usize..4).prop_map(|(h, m, s, style)| {
        let total = Duration::from_secs(h * 3600 + m * 60 + s);
        let text = match style {
            0 => total.as_secs().to_string(),
            1 => format!("{}s", total.as_secs()),
            2 => humantime::format_duration(total).to_string(),
            _ => format!("{h}h{m}m{s}s"),
        };
        (text, total)
    })
}

/// The flags that take a value, with values that are sometimes valid and sometimes not.
fn flag_and_value() -> impl Strategy<Value = Vec<String>> {
    let flags = prop::sample::select(vec![
        "--vault-addr",
        "--namespace",
        "--request-timeout",
        "--auth",
        "--auth-mount",
        "--role",
        "--secret",
        "--name",
        "--kind",
        "--format",
        "--file-mode",
        "--owner",
        "--rotate-every",
        "--revoke-grace",
        "--refresh-every",
        "--notify-signal",
        "--notify-url",
        "--notify-timeout",
        "--listen",
        "--once-timeout",
        "--splay",
        "--backoff-min",
        "--backoff-max",
        "--log-format",
        "--log-level",
        "--skip-verify",
        "--tls-server-name",
    ]);
    let values = prop_oneof![
        Just(String::new()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("1s".to_string()),
        Just("99999999999999999999h".to_string()),
        Just("0777".to_string()),
        Just("1000:1000".to_string()),
        Just("json".to_string()),
        Just("http://[::1]:8200".to_string()),
        Just("127.0.0.1:0".to_string()),
        Just("database/creds/app".to_string()),
        "\\PC{0,24}",
    ];
    (flags, values).prop_map(|(f, v)| vec![f.to_string(), v])
}

proptest! {
    #![proptest_config(bounded(CASES))]

    /// Durations given as flags come out exactly as written.
    #[test]
    fn durations_round_trip(
        (rotate, rotate_d) in duration_text(),
        (grace, grace_d) in duration_text(),
        (refresh, refresh_d) in duration_text(),
    ) {
        let mut args = base_args();
        args.extend(["--rotate-every", &rotate, "--revoke-grace", &grace,
            "--refresh-every", &refresh].map(String::from));
        let cfg = load(&args, &[("VAULT_TOKEN", "t")]).unwrap();
        let s = &cfg.secrets[0];
        prop_assert_eq!(s.rotate_every, Some(rotate_d));
        prop_assert_eq!(s.revoke_grace, grace_d);
        prop_assert_eq!(s.refresh_every, refresh_d);
    }

    /// Every permission mode is accepted in the usual spellings; anything wider is refused,
    /// naming the flag.
    #[test]
    fn file_modes_are_exact(mode in 0u32..=0o7777, style in 0usize..3) {
        let text = match style {
            0 => format!("{mode:o}"),
            1 => format!("0{mode:o}"),
            _ => format!("0o{mode:o}"),
        };
        let mut args = base_args();
        args.extend(["--file-mode".to_string(), text]);
        match load(&args, &[("VAULT_TOKEN", "t")]) {
            Ok(cfg) => {
                prop_assert!(mode <= 0o777);
                prop_assert_eq!(cfg.secrets[0].file_mode, mode);
            }
            Err(e) => {
                prop_assert!(mode > 0o777, "{mode:o} refused: {e}");
                prop_assert!(e.to_string().contains("file-mode") || e.to_string().contains("file_mode"), "{e}");
            }
        }
    }

    /// Any mix of flags and values is either a configuration or an error that says something;
    /// never a panic.
    #[test]
    fn arbitrary_flags_never_panic(extra in prop::collection::vec(flag_and_value(), 0..6)) {
        let mut args = base_args();
        args.extend(extra.into_iter().flatten());
        match load(&args, &[("VAULT_TOKEN", "t")]) {
            Ok(cfg) => prop_assert!(!cfg.secrets.is_empty()),
            Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
        }
    }

    /// Flags win over `VAULT_ROTATOR_*` variables, which win over the file.
    #[test]
    fn flags_beat_environment_beat_file(
        flag in proptest::option::of(duration_text()),
        env in proptest::option::of(duration_text()),
        file in proptest::option::of(duration_text()),
    ) {
        let path = out_dir().join(format!("precedence-{:?}.toml", std::thread::current().id()));
        let toml = match &file {
            Some((f, _)) => format!("[agent]\nbackoff_min = {f:?}\n"),
            None => String::new(),
        };
        std::fs::write(&path, toml).unwrap();
        let mut args = base_args();
        args.extend(["--config".to_string(), path.display().to_string(),
            "--backoff-max".to_string(), "100h".to_string()]);
        if let Some((f, _)) = &flag {
            args.extend(["--backoff-min".to_string(), f.clone()]);
        }
        let env_text = env.as_ref().map(|(t, _)| t.clone()).unwrap_or_default();
        let mut envs = vec![("VAULT_TOKEN", "t")];
        if env.is_some() {
            envs.push(("VAULT_ROTATOR_BACKOFF_MIN", env_text.as_str()));
        }
        let cfg = load(&args, &envs).unwrap();
        let want = flag.map(|f| f.1).or(env.map(|e| e.1)).or(file.map(|f| f.1))
            .unwrap_or(Duration::from_secs(1));
        prop_assert_eq!(cfg.backoff.min, want);
    }

    /// Any text as the `--config` file: a configuration or an error naming the file.
    #[test]
    fn arbitrary_toml_never_panics(text in prop_oneof![
        "\\PC{0,200}",
        // TOML-shaped: tables and keys the agent knows, with random values.
        (prop::sample::select(vec!["vault", "auth", "agent", "[secret]", "bogus"]),
         prop::sample::select(vec!["addr", "method", "listen", "path", "output", "file_mode",
            "rotate_every", "request_timeout", "skip_verify", "x"]),
         "[ -~]{0,30}")
            .prop_map(|(t, k, v)| {
                // "[secret]" becomes the array-of-tables header "[[secret]]".
                let header = format!("[{t}]");
                format!("{header}\n{k} = {v}\n")
            }),
    ]) {
        let path = out_dir().join(format!("any-{:?}.toml", std::thread::current().id()));
        std::fs::write(&path, &text).unwrap();
        let args = vec!["vault-rotator".to_string(), "--config".into(), path.display().to_string()];
        if let Err(e) = load(&args, &[("VAULT_TOKEN", "t")]) {
            prop_assert!(!e.to_string().trim().is_empty());
            if let ConfigError::File { path: p, .. } = &e {
                prop_assert_eq!(p, &path);
            }
        }
    }

    /// An unknown key in the file is refused by name, so a typo cannot pass silently.
    #[test]
    fn unknown_file_keys_are_named(
        table in prop::sample::select(vec!["vault", "auth", "agent"]),
        key in "zz_[a-z_]{1,12}",
    ) {
        let path = out_dir().join(format!("unknown-{:?}.toml", std::thread::current().id()));
        std::fs::write(&path, format!("[{table}]\n{key} = 1\n")).unwrap();
        let mut args = base_args();
        args.extend(["--config".to_string(), path.display().to_string()]);
        let e = load(&args, &[("VAULT_TOKEN", "t")]).unwrap_err();
        prop_assert!(e.to_string().contains(&key), "{e}");
    }

    /// A token from the environment never shows in a configuration error or in the
    /// configuration's Debug output (which a reload compares and could log).
    #[test]
    fn the_token_never_shows_in_errors_or_debug(
        token in "hvs\\.[A-Za-z0-9]{24}",
        bad in prop::sample::select(vec![
            ("--file-mode", "9999"), ("--rotate-every", "soon"), ("--listen", "nowhere"),
            ("--format", "xml"), ("--owner", "root"), ("--request-timeout", "x"),
        ]),
        valid in any::<bool>(),
    ) {
        let mut args = base_args();
        if !valid {
            args.extend([bad.0.to_string(), bad.1.to_string()]);
        }
        match load(&args, &[("VAULT_TOKEN", &token)]) {
            Ok(cfg) => {
                let debug = format!("{cfg:?}");
                prop_assert!(!debug.contains(&token));
            }
            Err(e) => {
                prop_assert!(!e.to_string().contains(&token));
                let debug = format!("{e:?}");
                prop_assert!(!debug.contains(&token));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding Vault's responses

/// A loopback HTTP server that answers every request with the response set last, then closes
/// the connection.
struct Canned {
    addr: SocketAddr,
    next: Arc<Mutex<Vec<u8>>>,
}

fn canned() -> &'static Canned {
    static SERVER: OnceLock<Canned> = OnceLock::new();
    SERVER.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let next = Arc::new(Mutex::new(Vec::new()));
        let reply = next.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                // Read the head and any body, then answer.
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let bytes = reply.lock().unwrap().clone();
                let _ = stream.write_all(&bytes);
                let _ = stream.shutdown(std::net::Shutdown::Write);
                let _ = stream.read_to_end(&mut Vec::new());
            }
        });
        Canned { addr, next }
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut args = base_args();
        args[2] = format!("http://{}", canned().addr);
        args.extend(["--request-timeout".to_string(), "10s".to_string()]);
        let cfg = load(&args, &[("VAULT_TOKEN", "t")]).unwrap();
        Client::new(&cfg.vault).unwrap()
    })
}

fn response(status: u16, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Serves `raw` to one `GET secret/x` of the real client. One request at a time: the server
/// and client are shared by every case.
fn read_with(raw: Vec<u8>) -> Result<vault_rotator::vault::Envelope, VaultError> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    *canned().next.lock().unwrap() = raw;
    runtime().block_on(client().read(&SecretValue::new("test-token"), "secret/x"))
}

fn statuses() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(vec![
            200u16, 400, 403, 404, 405, 412, 429, 500, 501, 502, 503
        ]),
        200u16..600,
    ]
    .prop_filter("no bodiless statuses", |s| !matches!(s, 204 | 205 | 304))
}

fn secret_text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9-]{20}".prop_map(|s| format!("S3CR3T-{s}"))
}

/// A Vault envelope for a database credential, with the secrets it carries.
fn envelope() -> impl Strategy<Value = (Value, String, String)> {
    (
        secret_text(),
        secret_text(),
        "[a-z0-9/-]{0,40}",
        0u64..10_000_000,
        any::<bool>(),
        prop::collection::btree_map("[a-z_]{1,10}", "\\PC{0,20}", 0..4),
    )
        .prop_map(|(password, token, lease, duration, renewable, extra)| {
            let mut data = json!({"username": "v-app-x", "password": password});
            for (k, v) in extra {
                data[format!("x_{k}")] = json!(v);
            }
            let env = json!({
                "request_id": "r", "lease_id": lease, "renewable": renewable,
                "lease_duration": duration, "data": data, "wrap_info": null, "warnings": null,
                "auth": {"client_token": token, "accessor": "acc", "policies": ["app"],
                         "lease_duration": 60, "renewable": true, "token_type": "service"},
                "mount_type": "database",
            });
            (env, password, token)
        })
}

proptest! {
    #![proptest_config(bounded(CASES))]

    /// Any status and body: a result, never a panic; errors keep the status, Vault's
    /// Retry-After, and the transient/permanent classification the backoff relies on.
    #[test]
    fn any_response_is_decoded_or_classified(
        status in statuses(),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            "\\PC{0,200}".prop_map(String::into_bytes),
            prop::collection::vec("\\PC{0,40}", 0..3)
                .prop_map(|e| json!({"errors": e}).to_string().into_bytes()),
            Just(b"{}".to_vec()),
            Just(b"null".to_vec()),
            Just(b"{\"data\":null}".to_vec()),
            Just(b"   \n".to_vec()),
        ],
        retry_after in proptest::option::of(prop_oneof![
            (0u64..100_000).prop_map(|n| n.to_string()),
            "[ -~]{0,12}",
        ]),
    ) {
        let headers: Vec<(String, String)> = retry_after
            .iter()
            .map(|v| ("Retry-After".to_string(), v.clone()))
            .collect();
        let result = read_with(response(status, &headers, &body));
        let success = (200..300).contains(&status);
        match result {
            Ok(_) => prop_assert!(success),
            Err(VaultError::Status { status: s, retry_after: ra, errors, .. }) => {
                prop_assert!(!success);
                prop_assert_eq!(s, status);
                let want = retry_after
                    .as_deref()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                prop_assert_eq!(ra, want);
                // A body that is not Vault's JSON is summarised, never echoed.
                let is_vault_json = serde_json::from_slice::<Value>(&body)
                    .is_ok_and(|v| v.is_object());
                if !is_vault_json && !body.is_empty() {
                    prop_assert_eq!(errors, vec![format!("non-JSON body of {} bytes", body.len())]);
                }
                let e = VaultError::Status {
                    method: reqwest::Method::GET, path: "p".into(), status, errors: vec![],
                    retry_after: None,
                };
                let transient = matches!(status, 412 | 429) || (status >= 500 && status != 501);
                prop_assert_eq!(e.is_transient(), transient);
            }
            Err(e @ VaultError::Decode { .. }) => {
                prop_assert!(success, "{e}");
                prop_assert!(e.is_transient());
            }
            Err(e) => prop_assert!(false, "unexpected error kind: {e}"),
        }
    }

    /// A well-formed envelope comes through with its lease fields, data and auth intact.
    #[test]
    fn envelopes_round_trip((env, _password, token) in envelope()) {
        let body = serde_json::to_vec(&env).unwrap();
        let got = read_with(response(200, &[], &body)).unwrap();
        prop_assert_eq!(&got.lease_id, env["lease_id"].as_str().unwrap());
        prop_assert_eq!(got.lease_duration, env["lease_duration"].as_u64().unwrap());
        prop_assert_eq!(got.renewable, env["renewable"].as_bool().unwrap());
        prop_assert_eq!(&Value::Object(got.data.clone()), &env["data"]);
        let auth = got.auth.as_ref().unwrap();
        prop_assert_eq!(auth.client_token.0.expose(), token.as_str());
        // Debug output of what was decoded hides the token (the password is in `data`, which
        // the agent only ever turns into SecretValues).
        let debug = format!("{auth:?}");
        prop_assert!(!debug.contains(&token));
    }

    /// A response cut short (devvault's `truncate`, a proxy dropping the tail) or replaced by
    /// garbage is an error, and the error text never carries the secrets that were in it.
    #[test]
    fn broken_responses_fail_without_echoing_secrets(
        (env, password, token) in envelope(),
        cut in 0.0f64..1.0,
        garbage in any::<bool>(),
    ) {
        let full = serde_json::to_vec(&env).unwrap();
        let body = if garbage {
            // Not JSON at all, with the secret in the middle (a misrouted response).
            format!("<html>{password} {token}</html>").into_bytes()
        } else {
            let n = ((full.len() as f64) * cut) as usize;
            full[..n.clamp(1, full.len() - 1)].to_vec()
        };
        let e = read_with(response(200, &[], &body)).unwrap_err();
        prop_assert!(matches!(e, VaultError::Decode { .. }), "{e}");
        let text = format!("{e} {e:?}");
        prop_assert!(!text.contains(&password), "{text}");
        prop_assert!(!text.contains(&token), "{text}");
        // The same body as an error status is summarised too.
        if garbage {
            let e = read_with(response(502, &[], &body)).unwrap_err();
            let text = format!("{e} {e:?}");
            prop_assert!(!text.contains(&password) && !text.contains(&token), "{text}");
        }
    }
}

proptest! {
    #![proptest_config(bounded(24))]

    /// Bodies are read up to MAX_RESPONSE_BYTES and refused beyond, whatever their status.
    #[test]
    fn bodies_over_the_cap_are_refused(
        size in prop_oneof![
            Just(MAX_RESPONSE_BYTES - 1),
            Just(MAX_RESPONSE_BYTES),
            Just(MAX_RESPONSE_BYTES + 1),
            (MAX_RESPONSE_BYTES / 2)..(3 * MAX_RESPONSE_BYTES),
        ],
        status in prop::sample::select(vec![200u16, 500]),
    ) {
        // Valid JSON of exactly `size` bytes.
        let prefix = b"{\"data\":{\"padding\":\"".to_vec();
        let suffix = b"\"}}".to_vec();
        let mut body = prefix.clone();
        body.resize(size - suffix.len(), b'A');
        body.extend_from_slice(&suffix);
        prop_assert_eq!(body.len(), size);
        let result = read_with(response(status, &[], &body));
        if size > MAX_RESPONSE_BYTES {
            let e = result.unwrap_err();
            prop_assert!(e.to_string().contains("larger than"), "{e}");
        } else if status == 200 {
            prop_assert!(result.is_ok());
        } else {
            prop_assert_eq!(result.unwrap_err().status(), Some(status));
        }
    }
}
