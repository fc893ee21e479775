use super::template::redact;
use super::*;
use crate::credential::SecretValue;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

const NASTY: &str = "p'a\"ss $(touch /tmp/pwned) `id` $HOME\\n\nline2 ; |&:@/?#%";

fn cred(password: &str) -> Credential {
    let mut fields = BTreeMap::new();
    fields.insert(
        "username".into(),
        FieldValue::Secret(SecretValue::new("v-app-abc")),
    );
    fields.insert(
        "password".into(),
        FieldValue::Secret(SecretValue::new(password)),
    );
    fields.insert("host".into(), FieldValue::Json("db.internal".into()));
    fields.insert("port".into(), FieldValue::Json(5432.into()));
    Credential {
        username: Some("v-app-abc".into()),
        password: Some(SecretValue::new(password)),
        expires_at: Some(UNIX_EPOCH + Duration::from_secs(1_795_654_923)),
        lease_id: Some("database/creds/app/xyz".into()),
        version: None,
        fields,
    }
}

fn template(source: &str) -> OutputFormat {
    OutputFormat::Template(Template::from_source("app.tmpl", source.to_string()).unwrap())
}

fn render_text(format: &OutputFormat, cred: &Credential) -> String {
    String::from_utf8(render(format, cred).unwrap()).unwrap()
}

/// Sources the env output in a real POSIX shell and prints one variable.
fn sourced(env_file: &[u8], var: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creds.env");
    std::fs::write(&path, env_file).unwrap();
    let script = format!(". \"$1\"; printf %s \"${var}\"");
    let out = Command::new("sh")
        .args(["-c", &script, "sh"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn json_has_fixed_keys_and_all_fields() {
    let out = render(&OutputFormat::Json, &cred("s3cret")).unwrap();
    assert_eq!(out.last(), Some(&b'\n'));
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["username"], "v-app-abc");
    assert_eq!(doc["password"], "s3cret");
    assert_eq!(doc["expires_at"], "2026-11-26T01:02:03Z");
    assert_eq!(doc["lease_id"], "database/creds/app/xyz");
    assert_eq!(doc["version"], serde_json::Value::Null);
    assert_eq!(doc["data"]["port"], 5432);
    assert_eq!(doc["data"]["host"], "db.internal");
    assert_eq!(doc["data"]["password"], "s3cret");
}

#[test]
fn json_nulls_when_not_leased() {
    let mut c = cred("x");
    (c.expires_at, c.lease_id, c.username, c.password) = (None, None, None, None);
    c.version = Some(7);
    let doc: serde_json::Value =
        serde_json::from_slice(&render(&OutputFormat::Json, &c).unwrap()).unwrap();
    assert_eq!(doc["expires_at"], serde_json::Value::Null);
    assert_eq!(doc["lease_id"], serde_json::Value::Null);
    assert_eq!(doc["username"], serde_json::Value::Null);
    assert_eq!(doc["password"], serde_json::Value::Null);
    assert_eq!(doc["version"], 7);
}

#[test]
fn output_is_byte_identical_for_equal_input() {
    let formats = [
        OutputFormat::Json,
        OutputFormat::Env,
        template("{{ data | tojson }}"),
    ];
    for format in &formats {
        let a = render(format, &cred("same")).unwrap();
        let b = render(format, &cred("same").clone()).unwrap();
        assert_eq!(a, b, "{format:?}");
    }
}

#[test]
fn expiry_out_of_range_is_an_error_not_a_panic() {
    let mut c = cred("x");
    c.expires_at = Some(UNIX_EPOCH + Duration::from_secs(crate::time::RFC3339_LIMIT_SECS + 10));
    for format in [OutputFormat::Json, OutputFormat::Env] {
        assert!(matches!(
            render(&format, &c),
            Err(RenderError::ExpiryOutOfRange)
        ));
    }
}

#[test]
fn env_survives_sourcing_nasty_values() {
    let out = render(&OutputFormat::Env, &cred(NASTY)).unwrap();
    assert_eq!(sourced(&out, "PASSWORD"), NASTY);
    assert_eq!(sourced(&out, "USERNAME"), "v-app-abc");
    assert_eq!(sourced(&out, "PORT"), "5432");
    assert_eq!(sourced(&out, "EXPIRES_AT"), "2026-11-26T01:02:03Z");
    assert!(!Path::new("/tmp/pwned").exists());
}

#[test]
fn env_keys_are_sanitised_and_sorted() {
    let mut c = cred("pw");
    c.fields
        .insert("db-name.x".into(), FieldValue::Json("app".into()));
    c.fields
        .insert("9lives".into(), FieldValue::Json(true.into()));
    c.fields.insert(
        "opts".into(),
        FieldValue::Json(serde_json::json!({"a": [1, 2]})),
    );
    c.fields
        .insert("nothing".into(), FieldValue::Json(serde_json::Value::Null));
    let text = render_text(&OutputFormat::Env, &c);
    let keys: Vec<&str> = text.lines().map(|l| l.split('=').next().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "DB_NAME_X",
            "EXPIRES_AT",
            "HOST",
            "NOTHING",
            "OPTS",
            "PASSWORD",
            "PORT",
            "USERNAME",
            "_9LIVES"
        ]
    );
    assert_eq!(sourced(text.as_bytes(), "_9LIVES"), "true");
    assert_eq!(sourced(text.as_bytes(), "OPTS"), r#"{"a":[1,2]}"#);
    assert_eq!(sourced(text.as_bytes(), "NOTHING"), "");
}

#[test]
fn env_adds_username_password_and_empty_expiry_when_missing() {
    let mut c = cred("from-cred");
    c.fields.clear();
    c.expires_at = None;
    let text = render_text(&OutputFormat::Env, &c);
    assert_eq!(
        text,
        "EXPIRES_AT=''\nPASSWORD='from-cred'\nUSERNAME='v-app-abc'\n"
    );
}

#[test]
fn env_collisions_are_errors_naming_fields_not_values() {
    let mut c = cred("pw-value");
    c.fields
        .insert("Host".into(), FieldValue::Secret(SecretValue::new("other")));
    let err = render(&OutputFormat::Env, &c).unwrap_err().to_string();
    assert!(
        err.contains("\"Host\"") && err.contains("\"host\"") && err.contains("HOST"),
        "{err}"
    );
    assert!(
        !err.contains("db.internal") && !err.contains("other"),
        "{err}"
    );

    let mut c = cred("pw");
    c.fields
        .insert("expires-at".into(), FieldValue::Json(1.into()));
    let err = render(&OutputFormat::Env, &c).unwrap_err().to_string();
    assert!(err.contains("EXPIRES_AT"), "{err}");
}

#[test]
fn env_rejects_unusable_names_and_nul() {
    let mut c = cred("pw");
    c.fields.insert("--".into(), FieldValue::Json(1.into()));
    assert!(matches!(
        render(&OutputFormat::Env, &c),
        Err(RenderError::EnvBadName { .. })
    ));

    let c = cred("nul\0inside");
    let err = render(&OutputFormat::Env, &c).unwrap_err();
    assert!(matches!(err, RenderError::EnvNul { .. }), "{err:?}");
    assert!(!err.to_string().contains("inside"));
}

#[test]
fn template_pgpass_line() {
    let f = template(
        "{{ data.host }}:{{ data.port }}:app:{{ username | pgpass }}:{{ password | pgpass }}\n",
    );
    let out = render_text(&f, &cred(r"a:b\c"));
    assert_eq!(out, "db.internal:5432:app:v-app-abc:a\\:b\\\\c\n");
}

#[test]
fn template_urls_encode_the_password_whole() {
    let f = template(
        "postgres://{{ username | urlencode }}:{{ password | urlencode }}@{{ data.host }}:{{ data.port }}/app\n\
         jdbc:postgresql://{{ data.host }}:{{ data.port }}/app?user={{ username | urlencode }}&password={{ password | urlencode }}",
    );
    let out = render_text(&f, &cred("p@ss/w:rd?#&= %~"));
    let enc = "p%40ss%2Fw%3Ard%3F%23%26%3D%20%25~";
    assert_eq!(
        out,
        format!(
            "postgres://v-app-abc:{enc}@db.internal:5432/app\n\
             jdbc:postgresql://db.internal:5432/app?user=v-app-abc&password={enc}"
        )
    );
}

#[test]
fn template_yaml_snippet_parses_back() {
    let f = template(
        "database:\n  user: {{ username | tojson }}\n  password: {{ password | tojson }}\n  port: {{ data.port }}\n{% if expires_at %}  expires: {{ expires_at | tojson }}\n{% endif %}",
    );
    let out = render_text(&f, &cred("it's: \"quoted\"\n#not-a-comment"));
    assert!(
        out.contains("  password: \"it's: \\\"quoted\\\"\\n#not-a-comment\"\n"),
        "{out}"
    );
    assert!(
        out.ends_with("  expires: \"2026-11-26T01:02:03Z\"\n"),
        "{out}"
    );
}

#[test]
fn template_shellquote_round_trips_through_sh() {
    let f = template("PGPASSWORD={{ password | shellquote }}\n");
    let out = render(&f, &cred(NASTY)).unwrap();
    assert_eq!(sourced(&out, "PGPASSWORD"), NASTY);
}

#[test]
fn template_missing_key_is_an_error_naming_it() {
    let f = template("host={{ data.host }}\nport={{ data.prot }}\n");
    let err = render(&f, &cred("s3cret-pw")).unwrap_err();
    let shown = err.to_string();
    assert!(
        matches!(err, RenderError::Undefined { line: Some(2), .. }),
        "{err:?}"
    );
    assert!(
        shown.contains("app.tmpl") && shown.contains("data.prot"),
        "{shown}"
    );
    assert!(shown.contains("host, password, port, username"), "{shown}");
    assert!(
        !shown.contains("s3cret-pw") && !shown.contains("db.internal"),
        "{shown}"
    );
}

#[test]
fn template_missing_key_through_a_filter_is_an_error() {
    let f = template("{{ data.pasword | urlencode }}");
    let err = render(&f, &cred("pw")).unwrap_err();
    assert!(err.to_string().contains("data.pasword"), "{err}");
}

#[test]
fn template_printing_none_is_an_error() {
    let f = template("version={{ version }}");
    let err = render(&f, &cred("pw")).unwrap_err().to_string();
    assert!(err.contains("none"), "{err}");
    assert_eq!(
        render_text(&template("v={{ version or '' }}"), &cred("pw")),
        "v="
    );
}

#[test]
fn syntax_errors_name_template_and_line() {
    let err = Template::from_source("/etc/app/db.tmpl", "ok\n{{ password \n".into()).unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, RenderError::Syntax { .. }), "{err:?}");
    assert!(
        shown.contains("/etc/app/db.tmpl") && shown.contains("line 2"),
        "{shown}"
    );
}

#[test]
fn unknown_top_level_names_fail_at_startup() {
    let err = Template::from_source(
        "t",
        "{{ pasword }}{{ data.x }}{% for i in range(2) %}{{ loop.index }}{% endfor %}".into(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, RenderError::UnknownVariable { names, .. } if names == "pasword"),
        "{err:?}"
    );
}

#[test]
fn no_auto_escaping_whatever_the_extension() {
    let f = OutputFormat::Template(
        Template::from_source("page.html", "{{ password }}".into()).unwrap(),
    );
    assert_eq!(render_text(&f, &cred("<&>'\"")), "<&>'\"");
}

#[test]
fn render_errors_redact_secret_values() {
    let c = cred("hunter2-long");
    let text = "unable to calculate hunter2-long + 5432";
    assert_eq!(redact(text, &c), "unable to calculate <redacted> + 5432");
    assert!(redact("a value ab here", &cred("ab")).contains("withheld"));
}

#[test]
fn template_debug_shows_only_the_name() {
    let t = Template::from_source("t.tmpl", "literal-secret {{ password }}".into()).unwrap();
    let shown = format!("{t:?}");
    assert!(
        shown.contains("t.tmpl") && !shown.contains("literal-secret"),
        "{shown}"
    );
}

fn files_text(format: &FilesFormat, cred: &Credential) -> BTreeMap<String, String> {
    render_files(format, cred)
        .unwrap()
        .into_iter()
        .map(|(name, bytes)| (name, String::from_utf8(bytes).unwrap()))
        .collect()
}

#[test]
fn files_hold_each_field_and_the_json_metadata_without_newlines() {
    let files = files_text(&FilesFormat::Fields, &cred(NASTY));
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "expires_at",
            "host",
            "lease_id",
            "password",
            "port",
            "username"
        ]
    );
    assert_eq!(files["password"], NASTY, "exactly the value");
    assert_eq!(files["username"], "v-app-abc");
    assert_eq!(files["port"], "5432");
    assert_eq!(files["expires_at"], "2026-11-26T01:02:03Z");
    assert_eq!(files["lease_id"], "database/creds/app/xyz");
}

#[test]
fn files_of_a_kv_secret_add_what_it_lacks_and_only_what_it_has() {
    let mut c = cred("x");
    c.fields.remove("username");
    c.fields.remove("password");
    c.fields.insert(
        "opts".into(),
        FieldValue::Json(serde_json::json!({"a": [1, null]})),
    );
    c.fields
        .insert("empty".into(), FieldValue::Json(serde_json::Value::Null));
    (c.expires_at, c.lease_id, c.version) = (None, None, Some(7));
    let files = files_text(&FilesFormat::Fields, &c);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["empty", "host", "opts", "password", "port", "username", "version"]
    );
    assert_eq!(files["opts"], r#"{"a":[1,null]}"#);
    assert_eq!(files["empty"], "");
    assert_eq!(files["password"], "x");
    assert_eq!(files["version"], "7");
}

#[test]
fn a_field_named_like_a_metadata_file_is_an_error_naming_it() {
    let mut c = cred("hunter2-secret");
    c.fields.insert(
        "version".into(),
        FieldValue::Secret(SecretValue::new("hunter2-secret")),
    );
    let err = render_files(&FilesFormat::Fields, &c).unwrap_err();
    assert!(matches!(err, RenderError::FileCollision { .. }), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.contains("\"version\"") && shown.contains("[secret.files]"),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn templated_files_are_rendered_by_name() {
    let t = |src: &str| Template::from_source("t", src.to_string()).unwrap();
    let format = FilesFormat::Templates(BTreeMap::from([
        ("jdbc.properties".to_string(), t("user={{ username }}\n")),
        (
            "url".to_string(),
            t("postgres://{{ username }}:{{ password | urlencode }}@h/db"),
        ),
    ]));
    let files = files_text(&format, &cred("a b"));
    assert_eq!(files.len(), 2);
    assert_eq!(files["jdbc.properties"], "user=v-app-abc\n");
    assert_eq!(files["url"], "postgres://v-app-abc:a%20b@h/db");
}
