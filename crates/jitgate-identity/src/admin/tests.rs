#![allow(clippy::unwrap_used)]

use jitgate_rules::config::ApiToken as ApiTokenConfig;
use serde_json::json;

use super::*;
use crate::requester::tests::{bearer, claims, env, hs256, hs_config, sign};

const CI_TOKEN: &str = "jgt_ci-bot-9f8e7d6c5b4a";

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn admin(jwt: Option<JwtConfig>) -> Admin {
    Admin {
        operators: vec![
            Principal::Group("platform".into()),
            Principal::User("root".into()),
        ],
        jwt,
        api_tokens: vec![ApiTokenConfig {
            name: "ci-bot".into(),
            user: "ci".into(),
            sha256: sha256_hex(CI_TOKEN),
            groups: vec!["oncall".into()],
        }],
        public_url: None,
    }
}

fn authenticator(admin: &Admin, identity_jwt: Option<&JwtConfig>) -> AdminAuthenticator {
    AdminAuthenticator::from_config_with_env(admin, identity_jwt, &env).unwrap()
}

#[test]
fn api_token_by_sha256() {
    let auth = authenticator(&admin(None), None);
    let id = auth.authenticate(&bearer(CI_TOKEN)).unwrap();
    // The token acts as its user, not under its own name.
    assert_eq!(id.user.as_deref(), Some("ci"));
    assert_eq!(id.groups, ["oncall"]);
    assert_eq!(id.via, Via::ApiToken);
    assert!(auth
        .authenticate(&bearer("jgt_ci-bot-9f8e7d6c5b4b"))
        .is_err());
    // The stored hash is not itself a credential.
    assert!(auth.authenticate(&bearer(&sha256_hex(CI_TOKEN))).is_err());
    assert_eq!(
        auth.authenticate(&HeaderMap::new()),
        Err(AuthError::Missing)
    );
}

#[test]
fn api_token_hash_in_upper_case_and_invalid_hashes() {
    let mut a = admin(None);
    a.api_tokens[0].sha256 = sha256_hex(CI_TOKEN).to_uppercase();
    assert!(authenticator(&a, None)
        .authenticate(&bearer(CI_TOKEN))
        .is_ok());
    for bad in ["", "abc", &"g".repeat(64)] {
        a.api_tokens[0].sha256 = bad.to_string();
        assert!(matches!(
            AdminAuthenticator::from_config_with_env(&a, None, &env),
            Err(IdentityError::ApiTokenHash { .. })
        ));
    }
}

#[test]
fn api_token_lookup_checks_every_entry() {
    // Constant time is by construction (`subtle::ConstantTimeEq` over every entry, no early
    // return); what a test can check is that the match is found wherever it sits.
    let mut a = admin(None);
    a.api_tokens.insert(
        0,
        ApiTokenConfig {
            name: "other".into(),
            user: "other".into(),
            sha256: sha256_hex("other"),
            groups: vec![],
        },
    );
    let auth = authenticator(&a, None);
    assert_eq!(
        auth.authenticate(&bearer(CI_TOKEN))
            .unwrap()
            .user
            .as_deref(),
        Some("ci")
    );
    assert_eq!(
        auth.authenticate(&bearer("other")).unwrap().user.as_deref(),
        Some("other")
    );
}

#[test]
fn two_tokens_of_one_user_are_one_person() {
    let mut a = admin(None);
    a.api_tokens.push(ApiTokenConfig {
        name: "ci-laptop".into(),
        user: "ci".into(),
        sha256: sha256_hex("laptop-token"),
        groups: vec!["oncall".into()],
    });
    let auth = authenticator(&a, None);
    let one = auth.authenticate(&bearer(CI_TOKEN)).unwrap();
    let two = auth.authenticate(&bearer("laptop-token")).unwrap();
    assert_eq!(one.user, two.user);
}

#[test]
fn jwt_falls_back_to_identity_jwt() {
    let token = hs256(&claims("alice"));
    let identity_jwt = hs_config();
    let auth = authenticator(&admin(None), Some(&identity_jwt));
    let id = auth.authenticate(&bearer(&token)).unwrap();
    assert_eq!(id.user.as_deref(), Some("alice"));
    assert_eq!(id.via, Via::Jwt);
    // Without any JWT config, a JWT is just an unknown API token.
    assert!(authenticator(&admin(None), None)
        .authenticate(&bearer(&token))
        .is_err());
}

#[test]
fn admin_jwt_takes_precedence_over_identity_jwt() {
    let admin_secret = "admin-secret-admin-secret-admin-secret!";
    let env = |var: &str| match var {
        "ADMIN_SECRET" => Some(admin_secret.to_string()),
        other => env(other),
    };
    let a = admin(Some(JwtConfig {
        hs256_secret_env: Some("ADMIN_SECRET".into()),
        ..hs_config()
    }));
    let auth = AdminAuthenticator::from_config_with_env(&a, Some(&hs_config()), &env).unwrap();
    // A requester token (identity secret) does not open the admin plane.
    assert!(auth
        .authenticate(&bearer(&hs256(&claims("alice"))))
        .is_err());
    let key = jsonwebtoken::EncodingKey::from_secret(admin_secret.as_bytes());
    let token = sign(jsonwebtoken::Algorithm::HS256, &key, None, &claims("alice"));
    assert!(auth.authenticate(&bearer(&token)).is_ok());
}

#[test]
fn operators_by_group_or_user() {
    let auth = authenticator(&admin(None), Some(&hs_config()));
    let mut c = claims("alice");
    c["groups"] = json!(["platform"]);
    let alice = auth.authenticate(&bearer(&hs256(&c))).unwrap();
    assert!(auth.is_operator(&alice));
    let bob = auth.authenticate(&bearer(&hs256(&claims("bob")))).unwrap();
    assert!(!auth.is_operator(&bob));
    let root = auth.authenticate(&bearer(&hs256(&claims("root")))).unwrap();
    assert!(auth.is_operator(&root));
    let ci = auth.authenticate(&bearer(CI_TOKEN)).unwrap();
    assert!(!auth.is_operator(&ci));
    assert!(!auth.is_operator(&Identity::anonymous()));
}
