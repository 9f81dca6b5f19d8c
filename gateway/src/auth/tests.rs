use super::*;

fn auth_with(text: &str) -> Auth {
    let dir = std::env::temp_dir().join(format!(
        "ferrocam-auth-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("auth.toml");
    std::fs::write(&path, text).unwrap();
    Auth::load(path, vec![9; 32]).unwrap()
}

fn sample() -> (String, String) {
    let (token, hash) = token::generate();
    let text = format!(
        "session_secret = \"{}\"\n\
         [[user]]\nname = \"alice\"\npassword_hash = \"{}\"\nrole = \"control\"\ndevices = [\"*\"]\n\
         [[user]]\nname = \"bob\"\npassword_hash = \"{}\"\nrole = \"view\"\ndevices = [\"porch\"]\n\
         [[token]]\nname = \"nvr\"\nsha256 = \"{hash}\"\nrole = \"view\"\ndevices = [\"garage\"]\n",
        "A".repeat(44),
        password::hash("wonderland"),
        password::hash("builder"),
    );
    (text, token)
}

#[tokio::test]
async fn login_hands_out_a_session_token_that_authenticates() {
    let (text, _) = sample();
    let auth = auth_with(&text);
    let (who, jwt) = auth.login("bob", "builder").await.unwrap();
    assert_eq!((who.name.as_str(), who.role), ("bob", Role::View));
    let again = auth.authenticate(&jwt).unwrap();
    assert!(again.may_watch(&DeviceId::parse("porch").unwrap()));
    assert!(!again.may_watch(&DeviceId::parse("garage").unwrap()));
    assert_eq!(
        auth.login("bob", "wrong").await.err(),
        Some(AuthError::BadPassword)
    );
    assert_eq!(
        auth.login("nobody", "builder").await.err(),
        Some(AuthError::BadPassword)
    );
}

#[tokio::test]
async fn api_tokens_authenticate_and_revoke_on_reload() {
    let (text, token) = sample();
    let auth = auth_with(&text);
    let who = auth.authenticate(&token).unwrap();
    assert_eq!(who.name, "token:nvr");
    assert_eq!(
        auth.authenticate("fct_nope").err(),
        Some(AuthError::BadToken)
    );
    let (_, jwt) = auth.login("alice", "wonderland").await.unwrap();
    // Remove the token and alice; reload: both are locked out, bob's login still works.
    let trimmed: String = text
        .split("[[")
        .filter(|part| !part.contains("nvr") && !part.contains("alice"))
        .collect::<Vec<_>>()
        .join("[[");
    std::fs::write(&auth.path, trimmed).unwrap();
    auth.reload().unwrap();
    assert_eq!(auth.authenticate(&token).err(), Some(AuthError::BadToken));
    assert_eq!(auth.authenticate(&jwt).err(), Some(AuthError::BadToken));
    assert!(auth.login("bob", "builder").await.is_ok());
}

#[test]
fn forged_and_foreign_session_tokens_are_refused() {
    let (text, _) = sample();
    let auth = auth_with(&text);
    let claims = SessionClaims {
        sub: "alice".into(),
        role: Role::Control,
        devices: vec!["*".into()],
        iat: now_secs(),
        exp: now_secs() + 600,
        jti: "x".into(),
        pwd: String::new(),
    };
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"some other gateway's secret, 32 bytes+"),
    )
    .unwrap();
    assert_eq!(auth.authenticate(&forged).err(), Some(AuthError::BadToken));
    assert_eq!(auth.authenticate("").err(), Some(AuthError::BadToken));
    assert_eq!(
        auth.authenticate("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.")
            .err(),
        Some(AuthError::BadToken)
    );
}

#[test]
fn bad_files_are_refused_with_a_reason() {
    // A session_secret from an older release is accepted, and ignored (sessions are keyed from
    // the grant key).
    let legacy = AuthConfig::parse("session_secret = \"c2hvcnQ=\"").unwrap();
    assert!(legacy.legacy_session_secret);
    assert!(!AuthConfig::parse("").unwrap().legacy_session_secret);
    let secret = "A".repeat(44);
    let bad_hash = AuthConfig::parse(&format!(
        "session_secret = \"{secret}\"\n[[user]]\nname = \"a\"\npassword_hash = \"plain\"\ndevices = [\"*\"]\n"
    ))
    .err()
    .unwrap();
    assert!(
        format!("{bad_hash:#}").contains("password_hash"),
        "{bad_hash:#}"
    );
    let bad_device = AuthConfig::parse(&format!(
        "session_secret = \"{secret}\"\n[[token]]\nname = \"t\"\nsha256 = \"{}\"\ndevices = [\"a/#\"]\n",
        "0".repeat(64)
    ))
    .err()
    .unwrap();
    assert!(format!("{bad_device:#}").contains("a/#"), "{bad_device:#}");
    let bad_origin = AuthConfig::parse(&format!(
        "session_secret = \"{secret}\"\nallowed_origins = [\"*\"]\n"
    ));
    assert!(bad_origin.is_err());
    let unknown = AuthConfig::parse(&format!("session_secret = \"{secret}\"\nadmin = true\n"));
    assert!(unknown.is_err());
}

#[tokio::test]
async fn talking_follows_the_role_unless_the_file_says_otherwise() {
    let (token, hash) = token::generate();
    let text = format!(
        "[[user]]\nname = \"alice\"\npassword_hash = \"{alice}\"\nrole = \"control\"\ndevices = [\"*\"]\n\
         [[user]]\nname = \"carol\"\npassword_hash = \"{alice}\"\nrole = \"control\"\ndevices = [\"*\"]\ntalk = false\n\
         [[user]]\nname = \"bob\"\npassword_hash = \"{alice}\"\nrole = \"view\"\ndevices = [\"*\"]\n\
         [[token]]\nname = \"intercom\"\nsha256 = \"{hash}\"\nrole = \"view\"\ndevices = [\"*\"]\ntalk = true\n",
        alice = password::hash("wonderland"),
    );
    let auth = auth_with(&text);
    let mut talk = Vec::new();
    for user in ["alice", "carol", "bob"] {
        let (who, jwt) = auth.login(user, "wonderland").await.unwrap();
        assert_eq!(who.talk, auth.authenticate(&jwt).unwrap().talk);
        talk.push((user, who.talk));
    }
    talk.push(("intercom", auth.authenticate(&token).unwrap().talk));
    assert_eq!(
        talk,
        [
            ("alice", true),
            ("carol", false),
            ("bob", false),
            ("intercom", true)
        ]
    );
    let typo = AuthConfig::parse(&format!(
        "[[token]]\nname = \"t\"\nsha256 = \"{}\"\ndevices = [\"*\"]\ntalk = \"yes\"\n",
        "0".repeat(64)
    ));
    assert!(typo.is_err(), "talk must be true or false");
}
