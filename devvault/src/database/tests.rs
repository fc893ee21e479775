use super::*;

#[test]
fn password_policy_holds() {
    for _ in 0..50 {
        let p = generate_password();
        assert_eq!(p.len(), 20);
        assert!(p.contains('-'));
    }
}

#[test]
fn username_shape() {
    let u = generate_username("approle", "app-readonly-role", SystemTime::now());
    assert!(u.starts_with("v-approle-app-read-"), "{u}");
    assert!(u.len() <= 63);
}

#[test]
fn statements_render() {
    assert_eq!(
        render(
            "CREATE ROLE \"{{name}}\" PASSWORD '{{ password }}' VALID UNTIL '{{expiration}}'",
            "u",
            "p",
            "e"
        ),
        "CREATE ROLE \"u\" PASSWORD 'p' VALID UNTIL 'e'"
    );
}
