use super::*;
use std::collections::HashMap;
use std::path::Path;

fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |k: &str| map.get(k).cloned();
    let mut all = vec!["vault-rotator"];
    all.extend_from_slice(args);
    Config::load(all, &lookup)
}

const BASE: &[&str] = &[
    "--vault-addr",
    "http://127.0.0.1:8200",
    "--auth",
    "approle",
    "--role-id-file",
    "/r",
    "--secret",
    "database/creds/app",
    "--output",
    "/tmp/x/db.json",
];

#[test]
fn defaults_are_safe() {
    let c = load(BASE, &[]).unwrap();
    let s = &c.secrets[0];
    assert_eq!(s.name, "app");
    assert_eq!(s.file_mode, 0o400);
    assert_eq!(s.revoke_grace, Duration::from_secs(300));
    assert!(s.kind.is_none());
    assert_eq!(c.listen, Some("0.0.0.0:8080".parse().unwrap()));
    assert_eq!(
        c.backoff,
        Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(300)
        }
    );
    assert_eq!(c.auth.mount, "approle");
}

#[test]
fn env_fills_flags_and_flags_win() {
    let c = load(
        &[
            "--auth",
            "kubernetes",
            "--role",
            "app",
            "--secret",
            "secret/data/a",
            "--output",
            "/o/a",
        ],
        &[
            ("VAULT_ADDR", "https://v:8200/"),
            ("VAULT_ROTATOR_ROTATE_EVERY", "1h"),
            ("VAULT_ROTATOR_ROLE", "ignored"),
            ("BAO_NAMESPACE", "team"),
        ],
    )
    .unwrap();
    assert_eq!(c.vault.addr, "https://v:8200");
    assert_eq!(c.auth.role.as_deref(), Some("app"));
    assert_eq!(c.vault.namespace.as_deref(), Some("team"));
    assert_eq!(c.secrets[0].rotate_every, Some(Duration::from_secs(3600)));
    assert_eq!(
        c.auth.jwt_file.as_deref(),
        Some(Path::new(DEFAULT_SA_TOKEN))
    );
}

#[test]
fn every_flag_has_its_variable() {
    use clap::CommandFactory;
    let empty = format!("{:?}", Cli::default());
    let mut seen = 0;
    for arg in Cli::command().get_arguments() {
        let id = arg.get_id().as_str();
        let name = cli::env_name(id);
        let boolean = matches!(arg.get_action(), clap::ArgAction::SetTrue);
        let value = if boolean { "yes" } else { "-from-the-variable" };
        let lookup = |k: &str| (k == name).then(|| value.to_string());
        let parsed = cli::parse(["vault-rotator"], &lookup).unwrap();
        let want = if boolean {
            format!("{id}: true")
        } else {
            format!("{id}: Some(\"{value}\")")
        };
        let text = format!("{parsed:?}");
        assert!(text.contains(&want), "{name} did not set --{id}: {text}");
        assert_ne!(text, empty);
        // The command line wins over the variable.
        if !boolean {
            let flag = format!("--{}", arg.get_long().unwrap());
            let parsed = cli::parse(["vault-rotator", &flag, "cli"], &lookup).unwrap();
            assert!(format!("{parsed:?}").contains(&format!("{id}: Some(\"cli\")")));
        }
        seen += 1;
    }
    assert!(seen >= 45, "only {seen} flags");
    // A boolean variable that is not true leaves the flag off; an empty one counts as unset.
    for value in ["false", "0", "maybe", ""] {
        let lookup = |k: &str| (k == "VAULT_ROTATOR_ONCE").then(|| value.to_string());
        assert!(!cli::parse(["vault-rotator"], &lookup).unwrap().once);
    }
    let lookup = |k: &str| (k == "VAULT_ROTATOR_SECRET").then(String::new);
    assert_eq!(cli::parse(["vault-rotator"], &lookup).unwrap().secret, None);
}

#[test]
fn help_version_and_usage_errors_stay_clap_errors() {
    use clap::error::ErrorKind;
    let kind = |args: &[&str]| match load(args, &[]) {
        Err(ConfigError::Cli(e)) => (e.kind(), e.exit_code()),
        other => panic!("{args:?}: {other:?}"),
    };
    assert_eq!(kind(&["--help"]), (ErrorKind::DisplayHelp, 0));
    assert_eq!(kind(&["--version"]), (ErrorKind::DisplayVersion, 0));
    assert_eq!(kind(&["--bogus-flag"]), (ErrorKind::UnknownArgument, 2));
}

#[test]
fn vault_rotator_var_beats_standard_var() {
    let c = load(
        &BASE[2..],
        &[
            ("VAULT_ADDR", "http://a:1"),
            ("VAULT_ROTATOR_VAULT_ADDR", "http://b:2"),
        ],
    )
    .unwrap();
    assert_eq!(c.vault.addr, "http://b:2");
}

#[test]
fn errors_name_the_field() {
    let cases: &[(&[&str], &str)] = &[
        (&["--rotate-every", "soon"], "--rotate-every"),
        (&["--file-mode", "999"], "--file-mode"),
        (&["--kind", "dinamic"], "--kind"),
        (&["--format", "yaml"], "--format"),
        (&["--listen", "nope"], "--listen"),
        (&["--refresh-every", "10ms"], "--refresh-every"),
        (&["--owner", "root"], "--owner"),
    ];
    for (extra, field) in cases {
        let mut args = BASE.to_vec();
        args.extend_from_slice(extra);
        let err = load(&args, &[]).unwrap_err().to_string();
        assert!(err.starts_with(field), "{extra:?}: {err}");
    }
    let err = load(&["--secret", "database/creds/app", "--output", "/o"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--vault-addr"), "{err}");
    let err = load(
        &[
            "--vault-addr",
            "http://v",
            "--auth",
            "kubernetes",
            "--secret",
            "a/b",
            "--output",
            "/o",
        ],
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--role"), "{err}");
    let err = load(&["--vault-addr", "http://v", "--auth", "magic"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--auth"), "{err}");
}

#[test]
fn config_file_rejects_unknown_keys_and_names_the_secret() {
    let dir = tempdir();
    let path = dir.join("c.toml");
    std::fs::write(&path, "[vault]\naddr = \"http://v:1\"\n[auth]\nmethod=\"token\"\n[[secret]]\npath=\"a/b\"\noutput=\"/o/x\"\nrotate_evry=\"1h\"\n").unwrap();
    let err = load(
        &["--config", path.to_str().unwrap()],
        &[("VAULT_TOKEN", "t")],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("rotate_evry"), "{err}");
    std::fs::write(&path, "[vault]\naddr = \"http://v:1\"\n[auth]\nmethod=\"token\"\n[[secret]]\nname=\"db\"\npath=\"database/creds/app\"\noutput=\"/o/x\"\nrevoke_grace=\"later\"\n").unwrap();
    let err = load(
        &["--config", path.to_str().unwrap()],
        &[("VAULT_TOKEN", "t")],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("secret[0].revoke_grace"), "{err}");
    std::fs::write(&path, "[vault]\naddr = \"http://v:1\"\n[auth]\nmethod=\"token\"\n[[secret]]\nname=\"db\"\npath=\"database/creds/app\"\noutput=\"/o/x\"\nkind=\"dynamic\"\n[[secret]]\npath=\"secret/data/k\"\noutput=\"/o/k\"\nformat=\"env\"\n").unwrap();
    let c = load(
        &["--config", path.to_str().unwrap()],
        &[("VAULT_TOKEN", "t")],
    )
    .unwrap();
    assert_eq!(c.secrets.len(), 2);
    assert_eq!(c.secrets[1].name, "k");
    assert!(matches!(
        c.secrets[1].output,
        Output::File {
            format: OutputFormat::Env,
            ..
        }
    ));
    assert_eq!(c.auth.method, AuthMethod::Token);
}

#[test]
fn once_disables_listener_and_splay() {
    let mut args = BASE.to_vec();
    args.push("--once");
    let c = load(&args, &[]).unwrap();
    assert!(c.once && c.listen.is_none() && c.splay.is_zero());
}

#[test]
fn admin_listener_defaults_to_loopback_and_can_be_turned_off() {
    let c = load(BASE, &[]).unwrap();
    let admin = c.admin.unwrap();
    assert_eq!(admin.listen, "127.0.0.1:8081".parse().unwrap());
    assert!(!admin.required && !admin.allow_remote && admin.token_file.is_none());
    assert!(!c.status_hide_usernames);
    let mut args = BASE.to_vec();
    args.extend(["--admin-listen", "off"]);
    assert!(load(&args, &[]).unwrap().admin.is_none());
    let c = load(
        BASE,
        &[
            ("VAULT_ROTATOR_ADMIN_LISTEN", "0.0.0.0:9000"),
            ("VAULT_ROTATOR_STATUS_HIDE_USERNAMES", "true"),
        ],
    )
    .unwrap();
    let admin = c.admin.unwrap();
    assert_eq!(admin.listen, "0.0.0.0:9000".parse().unwrap());
    assert!(admin.required && c.status_hide_usernames);
    let mut args = BASE.to_vec();
    args.push("--once");
    assert!(load(&args, &[]).unwrap().admin.is_none());
}

#[test]
fn admin_token_file_is_checked_and_remote_access_needs_it() {
    let dir = tempdir();
    let token = dir.join("admin-token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let token = token.to_str().unwrap();
    let with = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = BASE.to_vec();
        args.extend_from_slice(extra);
        load(&args, env)
    };
    let c = with(&["--admin-token-file", token, "--admin-allow-remote"], &[]).unwrap();
    let admin = c.admin.clone().unwrap();
    assert!(admin.allow_remote);
    assert_eq!(admin.token_file.as_deref(), Some(Path::new(token)));
    assert!(!format!("{c:?}").contains("s3cret"));
    let c = with(
        &[],
        &[
            ("VAULT_ROTATOR_ADMIN_TOKEN_FILE", token),
            ("VAULT_ROTATOR_ADMIN_ALLOW_REMOTE", "1"),
        ],
    )
    .unwrap();
    assert!(c.admin.unwrap().allow_remote);
    let err = with(&["--admin-allow-remote"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("--admin-allow-remote"), "{err}");
    let err = with(&["--admin-token-file", "/no/such/token"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("--admin-token-file"), "{err}");
    let empty = dir.join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let err = with(&["--admin-token-file", empty.to_str().unwrap()], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty"), "{err}");
    let err = with(&["--admin-listen", "localhost"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("--admin-listen"), "{err}");
}

#[test]
fn token_is_never_in_debug_output() {
    let c = load(
        &[
            "--vault-addr",
            "http://v",
            "--secret",
            "a/b",
            "--output",
            "/o/x",
        ],
        &[("VAULT_TOKEN", "hvs.supersecret")],
    )
    .unwrap();
    assert!(!format!("{c:?}").contains("supersecret"));
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "vr-cfg-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// BASE with `--output-dir DIR` in place of `--output`.
fn dir_args(dir: &str) -> Vec<&str> {
    let mut args: Vec<&str> = BASE[..BASE.len() - 2].to_vec();
    args.extend_from_slice(&["--output-dir", dir]);
    args
}

#[test]
fn output_dir_writes_one_file_per_field_and_excludes_the_single_file_settings() {
    let c = load(&dir_args("/secrets/db"), &[]).unwrap();
    assert_eq!(
        c.secrets[0].output,
        Output::Dir {
            path: PathBuf::from("/secrets/db"),
            files: FilesFormat::Fields
        }
    );
    assert_eq!(c.secrets[0].output.path(), Path::new("/secrets/db"));
    let c = load(
        &BASE[..BASE.len() - 2],
        &[("VAULT_ROTATOR_OUTPUT_DIR", "/s/d")],
    )
    .unwrap();
    assert_eq!(c.secrets[0].output.path(), Path::new("/s/d"));

    let mut both = BASE.to_vec();
    both.extend_from_slice(&["--output-dir", "/secrets/db"]);
    let err = load(&both, &[]).unwrap_err().to_string();
    assert!(
        err.starts_with("--output-dir: --output and --output-dir cannot both be given"),
        "{err}"
    );
    for (extra, field) in [
        (["--format", "env"], "--format"),
        (["--template", "/t.j2"], "--template"),
    ] {
        let mut args = dir_args("/secrets/db");
        args.extend_from_slice(&extra);
        let err = load(&args, &[]).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{field}: goes with --output, not --output-dir")),
            "{err}"
        );
    }
    let mut no_secret = BASE[..6].to_vec();
    no_secret.extend_from_slice(&["--output-dir", "/d"]);
    let err = load(&no_secret, &[]).unwrap_err().to_string();
    assert!(
        err.starts_with("--secret: required with --output-dir"),
        "{err}"
    );
}

fn write_config(name: &str, secret: &str) -> PathBuf {
    let path = tempdir().join(name);
    let text = format!(
        "[vault]\naddr = \"http://v:1\"\n[auth]\nmethod=\"token\"\n[[secret]]\n\
         name=\"db\"\npath=\"database/creds/app\"\n{secret}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn load_config(path: &Path) -> Result<Config, ConfigError> {
    load(
        &["--config", path.to_str().unwrap()],
        &[("VAULT_TOKEN", "t")],
    )
}

#[test]
fn output_dir_in_the_config_file_takes_templates_by_file_name() {
    let dir = tempdir();
    std::fs::write(dir.join("jdbc.j2"), "user={{ username }}\n").unwrap();
    std::fs::write(dir.join("pw.j2"), "{{ password }}").unwrap();
    let path = write_config(
        "files.toml",
        &format!(
            "output_dir=\"/secrets/db\"\n[secret.files]\n\"jdbc.properties\"={:?}\n\
             password={:?}\n",
            dir.join("jdbc.j2").display().to_string(),
            dir.join("pw.j2").display().to_string()
        ),
    );
    let c = load_config(&path).unwrap();
    let Output::Dir {
        path,
        files: FilesFormat::Templates(templates),
    } = &c.secrets[0].output
    else {
        panic!("not a templated set: {:?}", c.secrets[0].output);
    };
    assert_eq!(path, Path::new("/secrets/db"));
    let names: Vec<&str> = templates.keys().map(String::as_str).collect();
    assert_eq!(names, ["jdbc.properties", "password"]);
}

#[test]
fn output_dir_file_names_and_templates_are_checked_naming_the_entry() {
    let dir = tempdir();
    std::fs::write(dir.join("ok.j2"), "{{ username }}").unwrap();
    std::fs::write(dir.join("typo.j2"), "{{ usernme }}").unwrap();
    let ok = dir.join("ok.j2").display().to_string();
    let typo = dir.join("typo.j2").display().to_string();
    let cases = [
        (
            format!("output_dir=\"/d\"\nfiles={{ \"../x\"={ok:?} }}\n"),
            "secret[0].files[\"../x\"]: file name \"../x\" contains '/'",
        ),
        (
            format!("output_dir=\"/d\"\nfiles={{ \"..data\"={ok:?} }}\n"),
            "secret[0].files[\"..data\"]: file name \"..data\" starts with '..'",
        ),
        (
            format!("output_dir=\"/d\"\nfiles={{ \"\"={ok:?} }}\n"),
            "secret[0].files[\"\"]: file name \"\" is empty",
        ),
        (
            format!("output_dir=\"/d\"\nfiles={{ u={typo:?} }}\n"),
            "secret[0].files[\"u\"]: template",
        ),
        (
            "output_dir=\"/d\"\nfiles={ u=\"/no/such.j2\" }\n".to_string(),
            "secret[0].files[\"u\"]: /no/such.j2",
        ),
        (
            format!("output=\"/o/x\"\nfiles={{ u={ok:?} }}\n"),
            "secret[0].files: only goes with secret[0].output_dir",
        ),
        (
            "output=\"/o/x\"\noutput_dir=\"/d\"\n".to_string(),
            "secret[0].output_dir: secret[0].output and secret[0].output_dir cannot both be given",
        ),
        (
            "format=\"env\"\n".to_string(),
            "secret[0].output: one of secret[0].output or secret[0].output_dir is required",
        ),
        (
            "output_dir=\"/d\"\nformat=\"env\"\n".to_string(),
            "secret[0].format: goes with secret[0].output, not secret[0].output_dir",
        ),
    ];
    for (i, (secret, expected)) in cases.iter().enumerate() {
        let path = write_config(&format!("bad{i}.toml"), secret);
        let err = load_config(&path).unwrap_err().to_string();
        assert!(err.starts_with(expected), "{secret}: {err}");
    }
}

#[test]
fn a_set_directory_is_its_own() {
    let path = tempdir().join("own.toml");
    let text = "[vault]\naddr = \"http://v:1\"\n[auth]\nmethod=\"token\"\n\
        [[secret]]\nname=\"a\"\npath=\"database/creds/a\"\noutput_dir=\"/s/set\"\n\
        [[secret]]\nname=\"b\"\npath=\"database/creds/b\"\noutput=\"/s/set/b.json\"\n";
    std::fs::write(&path, text).unwrap();
    let err = load_config(&path).unwrap_err().to_string();
    assert!(
        err.starts_with("output_dir: /s/set/b.json is inside the output directory /s/set"),
        "{err}"
    );
}

#[test]
fn drain_check_from_flag_variable_and_file() {
    let flag = |url: &str| {
        let mut args = BASE.to_vec();
        args.extend_from_slice(&["--drain-check", url]);
        load(&args, &[]).map(|c| c.secrets[0].drain_check.clone())
    };
    assert_eq!(load(BASE, &[]).unwrap().secrets[0].drain_check, None);
    if cfg!(feature = "drain-check") {
        let c = flag("postgres://db:5432/app?sslmode=verify-full")
            .unwrap()
            .expect("set");
        assert_eq!((c.host.as_str(), c.port), ("db", 5432));
        let env = load(BASE, &[("VAULT_ROTATOR_DRAIN_CHECK", "mysql://db/app")]).unwrap();
        let c = env.secrets[0]
            .drain_check
            .as_ref()
            .expect("from the variable");
        assert_eq!(c.database, crate::drain::Database::Mysql);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[vault]\naddr = \"http://v:1\"\n[auth]\nmethod=\"token\"\n[[secret]]\nname=\"db\"\npath=\"database/creds/app\"\noutput=\"/o/x\"\ndrain_check=\"postgres://db/app\"\n").unwrap();
        let c = load(
            &["--config", path.to_str().unwrap()],
            &[("VAULT_TOKEN", "t")],
        )
        .unwrap();
        assert_eq!(
            c.secrets[0].drain_check.as_ref().map(|c| c.port),
            Some(5432)
        );
        std::fs::write(&path, "[vault]\naddr = \"http://v:1\"\n[auth]\nmethod=\"token\"\n[[secret]]\nname=\"db\"\npath=\"database/creds/app\"\noutput=\"/o/x\"\ndrain_check=\"postgres://app:hunter2@db/app\"\n").unwrap();
        let err = load(
            &["--config", path.to_str().unwrap()],
            &[("VAULT_TOKEN", "t")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("secret[0].drain_check"), "{err}");
        assert!(
            err.contains("user or password") && !err.contains("hunter2"),
            "{err}"
        );
    }
    let err = flag("postgres://app:hunter2@db/app")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("--drain-check: "), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let err = flag("postgres://db/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
        .unwrap_err()
        .to_string();
    assert!(err.contains("--drain-check"), "{err}");
    if !cfg!(feature = "drain-check") {
        let err = flag("postgres://db/app").unwrap_err().to_string();
        assert!(err.contains("feature `drain-check`"), "{err}");
    }
}

#[test]
fn vault_addresses_are_checked_as_urls() {
    use super::build::vault_addr;
    // IPv6 literals in brackets, paths (a proxy's prefix), and the trailing slash dropped.
    assert_eq!(
        vault_addr("http://[::1]:8200/").as_deref(),
        Ok("http://[::1]:8200")
    );
    assert_eq!(
        vault_addr("https://vault.example:8200/prefix/").as_deref(),
        Ok("https://vault.example:8200/prefix")
    );
    assert_eq!(
        vault_addr("https://Vault.Example:8200").as_deref(),
        Ok("https://vault.example:8200")
    );
    for bad in [
        "vault:8200",
        "ftp://vault",
        "http://",
        "http://::1:8200",
        "https://vault?x=1",
        "https://vault#top",
        "",
    ] {
        assert!(vault_addr(bad).is_err(), "{bad:?} accepted");
    }
    // User info is refused, and its password is never repeated in the error.
    for bad in ["https://user:hunter2@vault:8200", "https://hunter2@vault"] {
        let err = vault_addr(bad).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
    let err = load(
        &[
            "--vault-addr",
            "https://u:hunter2@v:8200",
            "--auth",
            "approle",
            "--role-id-file",
            "/r",
            "--secret",
            "database/creds/app",
            "--output",
            "/tmp/x/db.json",
        ],
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("--vault-addr: "), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn tls_server_names_are_dns_names_only() {
    use super::build::server_name;
    assert_eq!(
        server_name("vault.internal").as_deref(),
        Ok("vault.internal")
    );
    assert_eq!(
        server_name("Vault.Internal").as_deref(),
        Ok("vault.internal")
    );
    for bad in [
        "",
        "vault:8200",
        "vault/v1",
        "https://vault",
        "user@vault",
        "10.0.0.1",
        "[::1]",
        "two words",
    ] {
        assert!(server_name(bad).is_err(), "{bad:?} accepted");
    }
    let mut args = BASE.to_vec();
    args.extend(["--tls-server-name", "vault:8200"]);
    let err = load(&args, &[]).unwrap_err().to_string();
    assert!(err.starts_with("--tls-server-name: "), "{err}");
}
