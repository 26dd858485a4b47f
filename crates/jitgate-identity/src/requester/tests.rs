#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use jitgate_rules::config::{Identity as IdentityConfig, IdentityHeaders, JwtConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;

pub(crate) const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

pub(crate) fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

pub(crate) fn read(name: &str) -> Vec<u8> {
    std::fs::read(testdata(name)).unwrap()
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) fn env(var: &str) -> Option<String> {
    (var == "TEST_SECRET").then(|| SECRET.to_string())
}

pub(crate) fn hs_config() -> JwtConfig {
    JwtConfig {
        issuer: None,
        audience: None,
        hs256_secret_env: Some("TEST_SECRET".into()),
        public_keys: vec![],
        jwks_file: None,
        groups_claim: "groups".into(),
    }
}

fn keys_config(public_keys: &[&str], jwks: Option<&str>) -> JwtConfig {
    JwtConfig {
        hs256_secret_env: None,
        public_keys: public_keys.iter().map(|k| testdata(k)).collect(),
        jwks_file: jwks.map(testdata),
        ..hs_config()
    }
}

fn authenticator(jwt: Option<JwtConfig>, headers: Option<IdentityHeaders>) -> Authenticator {
    Authenticator::from_config_with_env(
        &IdentityConfig {
            jwt,
            headers,
            ..IdentityConfig::default()
        },
        &[],
        &env,
    )
    .unwrap()
}

pub(crate) fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "groups": ["oncall", "dev"], "iat": now(), "exp": now() + 600 })
}

pub(crate) fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

pub(crate) fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        claims,
    )
}

pub(crate) fn bearer(token: &str) -> HeaderMap {
    authorization(&format!("Bearer {token}"))
}

fn authorization(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
    h
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&read("rsa.key.pem")).unwrap()
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&read("ec.key.pem")).unwrap()
}

fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(&read("ed.key.pem")).unwrap()
}

#[test]
fn hs256_valid_token_names_user_and_groups() {
    let auth = authenticator(Some(hs_config()), None);
    let id = auth
        .authenticate(&bearer(&hs256(&claims("alice"))), false)
        .unwrap();
    assert_eq!(id.user.as_deref(), Some("alice"));
    assert_eq!(id.groups, ["oncall", "dev"]);
    assert_eq!(id.via, Via::Jwt);
}

#[test]
fn hs256_wrong_secret_is_refused() {
    let auth = authenticator(Some(hs_config()), None);
    let key = EncodingKey::from_secret(b"another-secret-another-secret-another-secret");
    let token = sign(Algorithm::HS256, &key, None, &claims("alice"));
    assert!(matches!(
        auth.authenticate(&bearer(&token), false),
        Err(AuthError::InvalidToken(_))
    ));
}

#[test]
fn expired_token_is_refused_beyond_leeway() {
    let auth = authenticator(Some(hs_config()), None);
    let mut c = claims("alice");
    c["exp"] = json!(now() - 3600);
    assert_eq!(
        auth.authenticate(&bearer(&hs256(&c)), false),
        Err(AuthError::Expired)
    );
    // Within the 30 s leeway still passes (clock skew between IdP and gateway).
    c["exp"] = json!(now() - 5);
    assert!(auth.authenticate(&bearer(&hs256(&c)), false).is_ok());
}

#[test]
fn future_nbf_is_refused() {
    let auth = authenticator(Some(hs_config()), None);
    let mut c = claims("alice");
    c["nbf"] = json!(now() + 3600);
    assert!(auth.authenticate(&bearer(&hs256(&c)), false).is_err());
    c["nbf"] = json!(now() - 10);
    assert!(auth.authenticate(&bearer(&hs256(&c)), false).is_ok());
    // CVE-2026-25537: a string where a number belongs must not skip the check.
    c["nbf"] = json!((now() + 3600).to_string());
    assert!(auth.authenticate(&bearer(&hs256(&c)), false).is_err());
}

#[test]
fn missing_or_malformed_exp_is_refused() {
    let auth = authenticator(Some(hs_config()), None);
    let c = json!({ "sub": "alice" });
    assert!(auth.authenticate(&bearer(&hs256(&c)), false).is_err());
    let c = json!({ "sub": "alice", "exp": "never" });
    assert!(auth.authenticate(&bearer(&hs256(&c)), false).is_err());
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let cfg = JwtConfig {
        issuer: Some("https://idp.example.com".into()),
        audience: Some("jitgate".into()),
        ..hs_config()
    };
    let auth = authenticator(Some(cfg), None);
    let mut c = claims("alice");
    c["iss"] = json!("https://idp.example.com");
    c["aud"] = json!("jitgate");
    assert!(auth.authenticate(&bearer(&hs256(&c)), false).is_ok());

    let mut wrong_iss = c.clone();
    wrong_iss["iss"] = json!("https://evil.example.com");
    assert!(auth
        .authenticate(&bearer(&hs256(&wrong_iss)), false)
        .is_err());

    let mut wrong_aud = c.clone();
    wrong_aud["aud"] = json!("other-service");
    assert!(auth
        .authenticate(&bearer(&hs256(&wrong_aud)), false)
        .is_err());

    let mut aud_list = c.clone();
    aud_list["aud"] = json!(["other-service", "jitgate"]);
    assert!(auth.authenticate(&bearer(&hs256(&aud_list)), false).is_ok());

    for missing in ["iss", "aud"] {
        let mut m = c.clone();
        m.as_object_mut().unwrap().remove(missing);
        assert!(
            auth.authenticate(&bearer(&hs256(&m)), false).is_err(),
            "{missing}"
        );
    }
}

#[test]
fn token_without_sub_is_refused() {
    let auth = authenticator(Some(hs_config()), None);
    let c = json!({ "exp": now() + 600 });
    assert!(auth.authenticate(&bearer(&hs256(&c)), false).is_err());
}

#[test]
fn rs256_es256_and_eddsa_public_keys_from_pem() {
    let auth = authenticator(
        Some(keys_config(
            &["rsa.pub.pem", "ec.pub.pem", "ed.pub.pem"],
            None,
        )),
        None,
    );
    for (alg, key) in [
        (Algorithm::RS256, rsa_key()),
        (Algorithm::ES256, ec_key()),
        (Algorithm::EdDSA, ed_key()),
    ] {
        let token = sign(alg, &key, None, &claims("bob"));
        let id = auth.authenticate(&bearer(&token), false).unwrap();
        assert_eq!(id.user.as_deref(), Some("bob"), "{alg:?}");
    }
    // A key we were not given.
    let other = EncodingKey::from_rsa_pem(&read("other-rsa.key.pem")).unwrap();
    let token = sign(Algorithm::RS256, &other, None, &claims("bob"));
    assert!(auth.authenticate(&bearer(&token), false).is_err());
    // The right RSA key, but an algorithm it is not pinned to.
    let token = sign(Algorithm::RS512, &rsa_key(), None, &claims("bob"));
    assert!(auth.authenticate(&bearer(&token), false).is_err());
}

#[test]
fn pkcs1_rsa_public_key() {
    let auth = authenticator(Some(keys_config(&["rsa.pkcs1.pub.pem"], None)), None);
    let token = sign(Algorithm::RS256, &rsa_key(), None, &claims("bob"));
    assert!(auth.authenticate(&bearer(&token), false).is_ok());
}

#[test]
fn jwks_selects_by_kid_and_tries_all_without_one() {
    let auth = authenticator(Some(keys_config(&[], Some("jwks.json"))), None);
    let rs = sign(
        Algorithm::RS256,
        &rsa_key(),
        Some("rsa-1"),
        &claims("carol"),
    );
    assert!(auth.authenticate(&bearer(&rs), false).is_ok());
    let es = sign(Algorithm::ES256, &ec_key(), Some("ec-1"), &claims("carol"));
    assert!(auth.authenticate(&bearer(&es), false).is_ok());
    let no_kid = sign(Algorithm::ES256, &ec_key(), None, &claims("carol"));
    assert!(auth.authenticate(&bearer(&no_kid), false).is_ok());
    // A kid naming the other key, or no key at all, finds nothing to verify with.
    let wrong_kid = sign(Algorithm::RS256, &rsa_key(), Some("ec-1"), &claims("carol"));
    assert!(auth.authenticate(&bearer(&wrong_kid), false).is_err());
    let unknown_kid = sign(
        Algorithm::RS256,
        &rsa_key(),
        Some("rotated-away"),
        &claims("carol"),
    );
    assert!(auth.authenticate(&bearer(&unknown_kid), false).is_err());
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let pem = read("rsa.pub.pem");
    // Only the RSA key configured, and both the RSA key and an HS256 secret: neither accepts
    // an HMAC over the public key bytes.
    for cfg in [
        keys_config(&["rsa.pub.pem"], None),
        JwtConfig {
            hs256_secret_env: Some("TEST_SECRET".into()),
            ..keys_config(&["rsa.pub.pem"], None)
        },
    ] {
        let auth = authenticator(Some(cfg), None);
        let token = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&pem),
            None,
            &claims("mallory"),
        );
        assert!(auth.authenticate(&bearer(&token), false).is_err());
    }
}

#[test]
fn alg_none_is_refused() {
    let auth = authenticator(Some(hs_config()), None);
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    for header in [json!({"alg": "none", "typ": "JWT"}), json!({"alg": "None"})] {
        let token = format!("{}.{}.", b64(&header), b64(&claims("mallory")));
        assert!(auth.authenticate(&bearer(&token), false).is_err());
    }
}

#[test]
fn groups_claim_as_list_string_or_nested() {
    let auth = authenticator(Some(hs_config()), None);
    let mut c = claims("alice");
    c["groups"] = json!("oncall platform,dev");
    let id = auth.authenticate(&bearer(&hs256(&c)), false).unwrap();
    assert_eq!(id.groups, ["oncall", "platform", "dev"]);
    c["groups"] = json!([1, 2]);
    assert!(auth.authenticate(&bearer(&hs256(&c)), false).is_err());
    c.as_object_mut().unwrap().remove("groups");
    assert!(auth
        .authenticate(&bearer(&hs256(&c)), false)
        .unwrap()
        .groups
        .is_empty());

    let nested = JwtConfig {
        groups_claim: "realm_access.roles".into(),
        ..hs_config()
    };
    let auth = authenticator(Some(nested), None);
    let mut c = claims("alice");
    c["realm_access"] = json!({ "roles": ["sre"] });
    assert_eq!(
        auth.authenticate(&bearer(&hs256(&c)), false)
            .unwrap()
            .groups,
        ["sre"]
    );
}

#[test]
fn present_but_invalid_credentials_are_errors_not_anonymous() {
    let auth = authenticator(Some(hs_config()), None);
    assert!(matches!(
        auth.authenticate(&bearer("not-a-jwt"), false),
        Err(AuthError::InvalidToken(_))
    ));
    for value in [
        "Basic YWxpY2U6c2VjcmV0",
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "bearer",
    ] {
        assert_eq!(
            auth.authenticate(&authorization(value), false),
            Err(AuthError::MalformedAuthorization),
            "{value}"
        );
    }
    let mut two = bearer(&hs256(&claims("alice")));
    two.append(AUTHORIZATION, HeaderValue::from_static("Bearer x"));
    assert_eq!(
        auth.authenticate(&two, false),
        Err(AuthError::MalformedAuthorization)
    );
    // The scheme is case-insensitive.
    let token = hs256(&claims("alice"));
    assert!(auth
        .authenticate(&authorization(&format!("bearer {token}")), false)
        .is_ok());
    // No credentials at all: anonymous.
    assert_eq!(
        auth.authenticate(&HeaderMap::new(), false),
        Ok(Identity::anonymous())
    );
}

#[test]
fn without_jwt_config_authorization_belongs_to_the_upstream() {
    let auth = authenticator(None, None);
    assert!(!auth.validates_jwt());
    for value in ["Basic YWxpY2U6c2VjcmV0", "Bearer anything"] {
        assert_eq!(
            auth.authenticate(&authorization(value), true),
            Ok(Identity::anonymous())
        );
    }
}

fn trusted_headers() -> IdentityHeaders {
    IdentityHeaders {
        user: "x-auth-user".into(),
        groups: Some("x-auth-groups".into()),
    }
}

#[test]
fn trusted_headers_only_from_trusted_peers() {
    let auth = authenticator(None, Some(trusted_headers()));
    let mut h = HeaderMap::new();
    h.insert("x-auth-user", HeaderValue::from_static("dave"));
    h.insert("x-auth-groups", HeaderValue::from_static("oncall, dev"));
    let id = auth.authenticate(&h, true).unwrap();
    assert_eq!(id.user.as_deref(), Some("dave"));
    assert_eq!(id.groups, ["oncall", "dev"]);
    assert_eq!(id.via, Via::TrustedHeaders);
    assert_eq!(auth.authenticate(&h, false), Ok(Identity::anonymous()));
    // Two user headers are ambiguous.
    h.append("x-auth-user", HeaderValue::from_static("root"));
    assert!(auth.authenticate(&h, true).is_err());
    // Groups alone name nobody.
    let mut groups_only = HeaderMap::new();
    groups_only.insert("x-auth-groups", HeaderValue::from_static("admin"));
    assert_eq!(
        auth.authenticate(&groups_only, true),
        Ok(Identity::anonymous())
    );
}

#[test]
fn bearer_token_wins_over_trusted_headers() {
    let auth = authenticator(Some(hs_config()), Some(trusted_headers()));
    let mut h = bearer(&hs256(&claims("alice")));
    h.insert("x-auth-user", HeaderValue::from_static("dave"));
    assert_eq!(
        auth.authenticate(&h, true).unwrap().user.as_deref(),
        Some("alice")
    );
    h.remove(AUTHORIZATION);
    assert_eq!(
        auth.authenticate(&h, true).unwrap().user.as_deref(),
        Some("dave")
    );
}

#[test]
fn trusted_peers_by_cidr() {
    let nets = [
        "127.0.0.1/32".parse().unwrap(),
        "10.0.0.0/8".parse().unwrap(),
    ];
    let auth =
        Authenticator::from_config_with_env(&IdentityConfig::default(), &nets, &env).unwrap();
    assert!(auth.is_trusted_peer("127.0.0.1".parse().unwrap()));
    assert!(auth.is_trusted_peer("10.2.3.4".parse().unwrap()));
    assert!(!auth.is_trusted_peer("192.168.1.1".parse().unwrap()));
}

fn load_error(cfg: JwtConfig) -> String {
    let identity = IdentityConfig {
        jwt: Some(cfg),
        headers: None,
        ..IdentityConfig::default()
    };
    match Authenticator::from_config_with_env(&identity, &[], &env) {
        Ok(_) => panic!("config should not load"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn config_errors_name_the_file_or_variable() {
    let e = load_error(JwtConfig {
        hs256_secret_env: Some("UNSET_VAR".into()),
        ..hs_config()
    });
    assert!(e.contains("UNSET_VAR"), "{e}");

    let short = |var: &str| (var == "SHORT").then(|| "tiny".to_string());
    let identity = IdentityConfig {
        jwt: Some(JwtConfig {
            hs256_secret_env: Some("SHORT".into()),
            ..hs_config()
        }),
        headers: None,
        ..IdentityConfig::default()
    };
    assert!(matches!(
        Authenticator::from_config_with_env(&identity, &[], &short),
        Err(IdentityError::WeakSecret { len: 4, .. })
    ));

    for (file, why) in [
        ("missing.pem", "No such file"),
        ("rsa.key.pem", "private key"),
        ("jwks.json", "PEM"),
    ] {
        let e = load_error(keys_config(&[file], None));
        assert!(e.contains(file) && e.contains(why), "{e}");
    }
    let e = load_error(keys_config(&[], Some("rsa.pub.pem")));
    assert!(e.contains("rsa.pub.pem") && e.contains("JWKS"), "{e}");
    assert!(matches!(
        Authenticator::from_config_with_env(
            &IdentityConfig {
                jwt: Some(keys_config(&[], None)),
                headers: None,
                ..IdentityConfig::default()
            },
            &[],
            &env
        ),
        Err(IdentityError::NoKeys)
    ));
}

#[test]
fn jwks_with_symmetric_or_mismatched_keys_is_refused() {
    let dir = std::env::temp_dir().join(format!("jitgate-identity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, v: Value| {
        let p = dir.join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let oct = write(
        "oct.json",
        json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
    );
    let mut jwks: Value = serde_json::from_slice(&read("jwks.json")).unwrap();
    jwks["keys"][1]["alg"] = json!("RS256");
    let mismatched = write("mismatched.json", jwks);
    for path in [oct, mismatched] {
        let cfg = JwtConfig {
            jwks_file: Some(path.clone()),
            ..keys_config(&[], None)
        };
        let e = load_error(cfg);
        assert!(e.contains(&*path.to_string_lossy()), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
