use super::issue::{guess_from_path, kv2_data_path};
use super::*;

#[test]
fn kv2_paths_get_data_inserted_once() {
    assert_eq!(
        kv2_data_path("secret/app", Some("secret/")),
        "secret/data/app"
    );
    assert_eq!(
        kv2_data_path("secret/data/app", Some("secret/")),
        "secret/data/app"
    );
    assert_eq!(
        kv2_data_path("team/kv/app/db", Some("team/kv/")),
        "team/kv/data/app/db"
    );
    assert_eq!(kv2_data_path("secret/app", None), "secret/data/app");
}

#[test]
fn kinds_are_guessed_from_paths() {
    assert_eq!(
        guess_from_path("database/creds/app"),
        Some(SecretKind::Dynamic)
    );
    assert_eq!(
        guess_from_path("db/static-creds/app"),
        Some(SecretKind::Static)
    );
    assert_eq!(guess_from_path("secret/data/app"), Some(SecretKind::KvV2));
    assert_eq!(guess_from_path("secret/app"), None);
}
