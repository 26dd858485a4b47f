#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ring::signature::{UnparsedPublicKey, ED25519};

use super::*;
use crate::requester::tests::{read, testdata};

const FP: &str = "3f0a9c6b7e2d4f1a8b5c0d9e6f3a2b1c4d7e0f9a8b6c5d4e3f2a1b0c9d8e7f6a";

fn claims() -> ApprovalClaims {
    ApprovalClaims {
        iss: APPROVAL_ISSUER.into(),
        jti: "jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B".into(),
        sub: "bob".into(),
        route: "prod-deploy".into(),
        approvers: vec!["alice".into()],
        fingerprint: FP.into(),
        iat: 1_800_000_000,
        exp: 1_800_000_300,
        uses: 1,
    }
}

const NOW: u64 = 1_800_000_100;

#[test]
fn round_trip() {
    let signer = ApprovalSigner::generate().unwrap();
    let token = signer.sign(&claims()).unwrap();
    assert_eq!(signer.verify(&token, FP, NOW).unwrap(), claims());
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some(signer.kid()));
}

#[test]
fn tampered_payload_is_refused() {
    let signer = ApprovalSigner::generate().unwrap();
    let token = signer.sign(&claims()).unwrap();
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims();
    forged.route = "everything".into();
    forged.uses = 1000;
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    parts[1] = &payload;
    assert!(matches!(
        signer.verify(&parts.join("."), FP, NOW),
        Err(TokenError::Invalid(_))
    ));
}

#[test]
fn other_request_is_refused() {
    let signer = ApprovalSigner::generate().unwrap();
    let token = signer.sign(&claims()).unwrap();
    let other = FP.replace('3', "4");
    assert_eq!(
        signer.verify(&token, &other, NOW),
        Err(TokenError::FingerprintMismatch)
    );
}

#[test]
fn expired_is_refused() {
    let signer = ApprovalSigner::generate().unwrap();
    let token = signer.sign(&claims()).unwrap();
    let exp = claims().exp;
    assert!(signer.verify(&token, FP, exp - 1).is_ok());
    assert_eq!(signer.verify(&token, FP, exp), Err(TokenError::Expired));
    assert_eq!(
        signer.verify(&token, FP, exp + 3600),
        Err(TokenError::Expired)
    );
}

#[test]
fn other_key_or_issuer_or_algorithm_is_refused() {
    let signer = ApprovalSigner::generate().unwrap();
    let other = ApprovalSigner::generate().unwrap();
    assert_ne!(signer.kid(), other.kid());
    let token = other.sign(&claims()).unwrap();
    assert!(matches!(
        signer.verify(&token, FP, NOW),
        Err(TokenError::Invalid(_))
    ));
    // Our kid on another key's signature.
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(signer.kid().to_string());
    let forged = jsonwebtoken::encode(&header, &claims(), &other.encoding).unwrap();
    assert!(matches!(
        signer.verify(&forged, FP, NOW),
        Err(TokenError::Invalid(_))
    ));
    // Our key, another issuer.
    let mut c = claims();
    c.iss = "someone-else".into();
    let token = signer.sign(&c).unwrap();
    assert!(matches!(
        signer.verify(&token, FP, NOW),
        Err(TokenError::Invalid(_))
    ));
    // HS256 keyed with the public key.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(signer.kid().to_string());
    let key = EncodingKey::from_secret(&signer.public);
    let token = jsonwebtoken::encode(&header, &claims(), &key).unwrap();
    assert!(matches!(
        signer.verify(&token, FP, NOW),
        Err(TokenError::Invalid(_))
    ));
}

#[test]
fn jwks_verifies_independently() {
    let signer = ApprovalSigner::generate().unwrap();
    let token = signer.sign(&claims()).unwrap();
    let jwks = signer.jwks();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["kid"], signer.kid());
    let x = key["x"].as_str().unwrap();

    // With ring alone, from the published x: what an upstream owner would do.
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let public = UnparsedPublicKey::new(&ED25519, URL_SAFE_NO_PAD.decode(x).unwrap());
    public
        .verify(
            signing_input.as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
        .unwrap();

    // With jsonwebtoken's JWK support.
    let decoding = DecodingKey::from_ed_components(x).unwrap();
    let mut v = Validation::new(Algorithm::EdDSA);
    v.validate_exp = false;
    let data = jsonwebtoken::decode::<ApprovalClaims>(&token, &decoding, &v).unwrap();
    assert_eq!(data.claims, claims());
}

#[test]
fn ephemeral_key_when_none_is_configured() {
    let (signer, ephemeral) = ApprovalSigner::from_config(None).unwrap();
    assert!(ephemeral);
    let token = signer.sign(&claims()).unwrap();
    assert!(signer.verify(&token, FP, NOW).is_ok());
}

#[test]
fn pem_key_loads_with_a_stable_kid() {
    let path = testdata("ed.key.pem");
    let (signer, ephemeral) = ApprovalSigner::from_config(Some(&path)).unwrap();
    assert!(!ephemeral);
    let (again, _) = ApprovalSigner::from_config(Some(&path)).unwrap();
    assert_eq!(signer.kid(), again.kid());
    let token = signer.sign(&claims()).unwrap();
    assert!(again.verify(&token, FP, NOW).is_ok());
    // The published key is the one in the PEM file (openssl's SPKI ends with the raw key).
    let public = pem::parse(read("ed.pub.pem")).unwrap();
    let x = URL_SAFE_NO_PAD.encode(&public.contents()[public.contents().len() - 32..]);
    assert_eq!(signer.jwks()["keys"][0]["x"], x);
}

#[test]
fn kid_is_the_rfc7638_thumbprint() {
    // RFC 8037 appendix A.1 (private key) and A.3 (thumbprint of its public key).
    let d = URL_SAFE_NO_PAD
        .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
        .unwrap();
    let mut pkcs8 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend(d);
    let signer = ApprovalSigner::from_pkcs8(&pkcs8).unwrap();
    assert_eq!(
        signer.jwks()["keys"][0]["x"],
        "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    );
    assert_eq!(signer.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
}

#[test]
fn wrong_key_type_errors_with_the_file_name() {
    for file in [
        "rsa.key.pem",
        "ec.key.pem",
        "ed.pub.pem",
        "jwks.json",
        "missing.pem",
    ] {
        let path: PathBuf = testdata(file);
        let e = ApprovalSigner::from_config(Some(&path))
            .unwrap_err()
            .to_string();
        assert!(e.contains(file), "{e}");
    }
}

#[test]
fn requester_digests_are_keyed_and_stable() {
    let a = ApprovalSigner::generate().unwrap();
    let b = ApprovalSigner::generate().unwrap();
    let d = a.requester_digest(b"x-api-key: key-A");
    assert_eq!(d.len(), 32);
    assert_eq!(d, a.requester_digest(b"x-api-key: key-A"));
    assert_ne!(d, a.requester_digest(b"x-api-key: key-B"));
    // Another key, another digest: a digest reveals nothing without the signing key.
    assert_ne!(d, b.requester_digest(b"x-api-key: key-A"));
}
