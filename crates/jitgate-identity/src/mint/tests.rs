#![allow(clippy::unwrap_used)]

use jitgate_rules::config::{Identity as IdentityConfig, JwtConfig};

use super::*;
use crate::requester::tests::{bearer, env, hs_config, SECRET};
use crate::{Authenticator, Via};

#[test]
fn minted_token_is_accepted_by_the_matching_config() {
    let cfg = JwtConfig {
        issuer: Some("jitgate-dev".into()),
        audience: Some("jitgate".into()),
        groups_claim: "roles".into(),
        ..hs_config()
    };
    let auth = Authenticator::from_config_with_env(
        &IdentityConfig {
            jwt: Some(cfg),
            headers: None,
            ..IdentityConfig::default()
        },
        &[],
        &env,
    )
    .unwrap();
    let groups = vec!["oncall".to_string()];
    let ttl = Duration::from_secs(600);
    let token = mint_hs256(
        SECRET.as_bytes(),
        "alice",
        &groups,
        "roles",
        ttl,
        Some("jitgate-dev"),
        Some("jitgate"),
    )
    .unwrap();
    let id = auth.authenticate(&bearer(&token), false).unwrap();
    assert_eq!(id.user.as_deref(), Some("alice"));
    assert_eq!(id.groups, groups);
    assert_eq!(id.via, Via::Jwt);
    // Without the issuer the configured check refuses it.
    let token = mint_hs256(
        SECRET.as_bytes(),
        "alice",
        &groups,
        "roles",
        ttl,
        None,
        Some("jitgate"),
    );
    assert!(auth.authenticate(&bearer(&token.unwrap()), false).is_err());
}
