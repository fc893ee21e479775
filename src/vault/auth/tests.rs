use super::*;

#[tokio::test(start_paused = true)]
async fn token_life_becomes_final_when_capped() {
    let now = Instant::now();
    let t = Token::new(
        SecretValue::new("x"),
        1,
        "a".into(),
        Some(Duration::from_secs(60)),
        true,
        now,
    );
    assert!(t.final_end().is_none());
    t.renewed(
        now + Duration::from_secs(40),
        Duration::from_secs(60),
        Duration::from_secs(60),
        true,
    );
    assert!(t.final_end().is_none());
    t.renewed(
        now + Duration::from_secs(80),
        Duration::from_secs(60),
        Duration::from_secs(20),
        true,
    );
    let end = t.final_end().expect("capped renewal makes the end final");
    // Granted 20 s at 80 s, less the second kept in hand for Vault's rounding.
    assert_eq!(end.expires_at, now + Duration::from_secs(99));
    let never = Token::new(SecretValue::new("root"), 2, String::new(), None, false, now);
    assert!(never.final_end().is_none() && !never.is_expired(now + Duration::from_secs(1_000_000)));
}

#[test]
fn wrapped_secret_ids_are_recognised() {
    assert!(looks_like_token("hvs.CAESIabc"));
    assert!(looks_like_token("s.abcdef"));
    assert!(!looks_like_token("84896a0c-1347-aa90-a4f6-aca8b7558780"));
}
