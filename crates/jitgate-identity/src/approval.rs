//! Approval tokens (SPEC section 6): EdDSA JWTs the gateway signs once a ticket is approved,
//! bound to the request's fingerprint, forwarded upstream in `Jit-Approval`, and verifiable by
//! anyone with the key published at `/.well-known/jwks.json`.
//!
//! How often a token may be redeemed (`uses`) is counted by the store, not here.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{IdentityError, TokenError};
use crate::keys::ensure_crypto_provider;

/// The `iss` of every approval token.
pub const APPROVAL_ISSUER: &str = "jitgate";

/// The claims of an approval token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalClaims {
    /// Always [`APPROVAL_ISSUER`].
    pub iss: String,
    /// The ticket id (`jit_` + ULID).
    pub jti: String,
    /// The requester's user name, or `anonymous`.
    pub sub: String,
    /// The route the approval was granted under.
    pub route: String,
    /// Who approved (user names).
    pub approvers: Vec<String>,
    /// Hex SHA-256 request fingerprint (SPEC section 6); the token is valid for this request only.
    pub fingerprint: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds (`token_ttl` after approval); valid while `now < exp`.
    pub exp: u64,
    /// How many times the route lets this token be redeemed.
    pub uses: u32,
}

/// Signs and verifies approval tokens with one Ed25519 key.
pub struct ApprovalSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The raw 32-byte public key.
    public: Vec<u8>,
    /// RFC 7638 thumbprint of the public JWK, base64url.
    kid: String,
    /// Keys [`ApprovalSigner::requester_digest`]: derived from the private key, so replicas
    /// sharing a signing key tell anonymous requesters apart the same way.
    digest_key: ring::hmac::Key,
}

impl std::fmt::Debug for ApprovalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

// === impl ApprovalSigner ===

impl ApprovalSigner {
    /// An opaque, keyed digest (32 hex digits) of `material`: what tells anonymous requesters
    /// apart (their credential headers). Keyed with a secret derived from the signing key, so
    /// neither approvers nor anyone else can test guesses of a credential against it.
    pub fn requester_digest(&self, material: &[u8]) -> String {
        let tag = ring::hmac::sign(&self.digest_key, material);
        jitgate_rules::ticket::hex(&tag.as_ref()[..16])
    }

    /// The key of `[approvals] signing_key` (an Ed25519 private key, PKCS#8 PEM, as
    /// `openssl genpkey -algorithm ed25519` writes), or, without one, a fresh key that lives as
    /// long as the process: the `bool` is true then. An ephemeral key means tokens die with the
    /// process and replicas cannot verify each other's tokens; the caller should say so.
    pub fn from_config(signing_key: Option<&Path>) -> Result<(Self, bool), IdentityError> {
        match signing_key {
            Some(path) => Ok((Self::from_pem_file(path)?, false)),
            None => Ok((Self::generate()?, true)),
        }
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, IdentityError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| IdentityError::KeyGeneration)?;
        Self::from_pkcs8(pkcs8.as_ref()).map_err(|_| IdentityError::KeyGeneration)
    }

    /// Loads a PKCS#8 PEM Ed25519 private key; errors name the file.
    pub fn from_pem_file(path: &Path) -> Result<Self, IdentityError> {
        let err = |reason: String| IdentityError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let block = pem::parse(&bytes).map_err(|e| err(format!("not PEM: {e}")))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(err(format!(
                "expected an Ed25519 `PRIVATE KEY` (PKCS#8) PEM block, found `{}` \
                 (make one with: openssl genpkey -algorithm ed25519)",
                block.tag()
            )));
        }
        Self::from_pkcs8(block.contents()).map_err(err)
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        ensure_crypto_provider();
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| format!("not an Ed25519 PKCS#8 private key ({e})"))?;
        let public = pair.public_key().as_ref().to_vec();
        let x = URL_SAFE_NO_PAD.encode(&public);
        // RFC 7638: the required members in lexicographic order, no whitespace.
        let thumbprint = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let mut secret = Sha256::new();
        secret.update(b"jitgate anonymous requester digest v1");
        secret.update(der);
        let signer = Self {
            encoding: EncodingKey::from_ed_der(der),
            decoding: DecodingKey::from_ed_der(&public),
            public,
            kid: URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint.as_bytes())),
            digest_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret.finalize()),
        };
        // Sign once now so a key the JWT backend cannot use fails at load, not per approval.
        jsonwebtoken::crypto::sign(b"probe", &signer.encoding, Algorithm::EdDSA)
            .map_err(|e| format!("unusable Ed25519 key: {e}"))?;
        Ok(signer)
    }

    /// The key id: the RFC 7638 SHA-256 thumbprint of the public key, base64url.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs `claims` as an EdDSA JWT with `kid` in the header.
    pub fn sign(&self, claims: &ApprovalClaims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))
    }

    /// Checks that `token` is ours (EdDSA, our key, issuer `jitgate`, good signature), not
    /// expired at `now` (Unix seconds; no leeway, we are both clocks), and issued for the
    /// request whose fingerprint is `expected_fingerprint`.
    pub fn verify(
        &self,
        token: &str,
        expected_fingerprint: &str,
        now: u64,
    ) -> Result<ApprovalClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| TokenError::Invalid(format!("malformed: {e}")))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid(format!("alg {:?}", header.alg)));
        }
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(TokenError::Invalid("signed with another key".into()));
        }
        let mut v = Validation::new(Algorithm::EdDSA);
        // Expiry is checked below against the caller's clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.set_issuer(&[APPROVAL_ISSUER]);
        v.set_required_spec_claims(&["iss"]);
        let claims = jsonwebtoken::decode::<ApprovalClaims>(token, &self.decoding, &v)
            .map_err(|e| TokenError::Invalid(e.to_string()))?
            .claims;
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        if claims.fingerprint != expected_fingerprint {
            return Err(TokenError::FingerprintMismatch);
        }
        Ok(claims)
    }

    /// The public key, base64url without padding (the JWK's `x`).
    pub fn public_key_b64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.public)
    }

    /// The JWKS document for `/.well-known/jwks.json` (RFC 8037 OKP key).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": self.public_key_b64url(),
                "kid": self.kid,
                "alg": "EdDSA",
                "use": "sig",
            }]
        })
    }
}

#[cfg(test)]
mod tests;
