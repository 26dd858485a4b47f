//! JWT validation with the keys of one `[identity.jwt]` or `[admin.jwt]` section.
//!
//! Every configured key is pinned to exactly one algorithm, decided by the key's type (or a
//! JWKS entry's `alg`, which must agree with its type). A token is only tried against keys whose
//! algorithm equals its header's `alg`, so algorithm confusion (an HS256 token "signed" with a
//! public key, `alg: none`) has no key to verify against.

use std::path::Path;
use std::str::FromStr;

use base64::Engine as _;
use jitgate_rules::config::JwtConfig;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::error::{AuthError, IdentityError};
use crate::identity::{Identity, Via};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub(crate) const LEEWAY_SECS: u64 = 30;

/// Shortest HS256 secret accepted: the hash output size (RFC 7518 section 3.2).
const MIN_HS256_SECRET: usize = 32;

/// Makes the RustCrypto backend the process default for `jsonwebtoken`. Automatic with only
/// the `rust_crypto` feature; explicit so that another crate enabling `aws_lc_rs` as well
/// (feature unification) cannot turn every verification into a panic.
pub(crate) fn ensure_crypto_provider() {
    // Err means a provider is already installed, which is all we need.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

/// One verification key, pinned to one algorithm.
struct VerifyKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Validates bearer JWTs for one config section.
pub(crate) struct JwtVerifier {
    keys: Vec<VerifyKey>,
    issuer: Option<String>,
    audience: Option<String>,
    groups_claim: String,
}

// === impl JwtVerifier ===

impl JwtVerifier {
    /// Reads the secret and key files named by `cfg`. `env` looks up environment variables
    /// (tests pass their own so they need not mutate the process environment).
    pub(crate) fn from_config(
        cfg: &JwtConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, IdentityError> {
        ensure_crypto_provider();
        let mut keys = Vec::new();
        if let Some(var) = &cfg.hs256_secret_env {
            let secret =
                env(var).ok_or_else(|| IdentityError::MissingSecret { var: var.clone() })?;
            if secret.len() < MIN_HS256_SECRET {
                return Err(IdentityError::WeakSecret {
                    var: var.clone(),
                    len: secret.len(),
                });
            }
            keys.push(VerifyKey {
                kid: None,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        for path in &cfg.public_keys {
            keys.extend(load_pem_public_keys(path)?);
        }
        if let Some(path) = &cfg.jwks_file {
            keys.extend(load_jwks(path)?);
        }
        if keys.is_empty() {
            return Err(IdentityError::NoKeys);
        }
        Ok(Self {
            keys,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            groups_claim: cfg.groups_claim.clone(),
        })
    }

    /// Validates `token` and returns who it names.
    pub(crate) fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::InvalidToken(format!("malformed token: {e}")))?;
        let same_alg = || self.keys.iter().filter(|k| k.alg == header.alg);
        // A kid that names a JWKS key selects it; otherwise only keys without a kid (PEM files,
        // the HS256 secret) are tried, so an unknown kid never widens the search.
        let mut candidates: Vec<&VerifyKey> = match &header.kid {
            Some(kid) => same_alg()
                .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                .collect(),
            None => same_alg().collect(),
        };
        if candidates.is_empty() {
            candidates = same_alg().filter(|k| k.kid.is_none()).collect();
        }
        if candidates.is_empty() {
            return Err(AuthError::InvalidToken(format!(
                "no configured key for alg {:?}{}",
                header.alg,
                header
                    .kid
                    .as_deref()
                    .map(|k| format!(" and kid `{k}`"))
                    .unwrap_or_default()
            )));
        }
        let validation = self.validation(header.alg);
        let mut best: Option<jsonwebtoken::errors::Error> = None;
        for k in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation) {
                Ok(data) => return self.identity(&data.claims),
                Err(e) => {
                    // A claims error means the signature was good: it is the real answer.
                    let signature_ok = !matches!(
                        e.kind(),
                        ErrorKind::InvalidSignature
                            | ErrorKind::InvalidAlgorithm
                            | ErrorKind::InvalidKeyFormat
                            | ErrorKind::InvalidRsaKey(_)
                            | ErrorKind::InvalidEcdsaKey
                            | ErrorKind::InvalidEddsaKey
                    );
                    if signature_ok {
                        return Err(to_auth_error(&e));
                    }
                    best = Some(e);
                }
            }
        }
        Err(best.map_or_else(
            || AuthError::InvalidToken("no key verified the token".into()),
            |e| to_auth_error(&e),
        ))
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            // Not ours to check: a token for another audience is the issuer's business.
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        v
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, AuthError> {
        let user = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(AuthError::InvalidToken("token has no `sub`".into())),
        };
        let groups = match claim(claims, &self.groups_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => split_groups(s),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    AuthError::InvalidToken(format!(
                        "`{}` must be a list of strings",
                        self.groups_claim
                    ))
                })?,
            Some(_) => {
                return Err(AuthError::InvalidToken(format!(
                    "`{}` must be a list of strings or a string",
                    self.groups_claim
                )))
            }
        };
        Ok(Identity {
            user: Some(user),
            groups,
            via: Via::Jwt,
        })
    }
}

/// The claim named `name`, or, when there is none, the nested claim at the dotted path
/// (`realm_access.roles`, as Keycloak puts roles).
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    claims.get(name).or_else(|| {
        let mut parts = name.split('.');
        let first = claims.get(parts.next()?)?;
        parts.try_fold(first, |v, p| v.get(p))
    })
}

/// Groups given as one string, separated by spaces or commas (the OAuth `scope` style).
pub(crate) fn split_groups(s: &str) -> Vec<String> {
    s.split([' ', ','])
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect()
}

fn to_auth_error(e: &jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        _ => AuthError::InvalidToken(e.to_string()),
    }
}

// === key loading ===

fn key_error(path: &Path, reason: impl Into<String>) -> IdentityError {
    IdentityError::KeyFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|e| key_error(path, e.to_string()))
}

/// The public keys in a PEM file: `PUBLIC KEY` (SPKI: RSA, EC P-256/P-384, Ed25519) or
/// `RSA PUBLIC KEY` (PKCS#1) blocks. Private keys and certificates are refused by name.
fn load_pem_public_keys(path: &Path) -> Result<Vec<VerifyKey>, IdentityError> {
    let bytes = read(path)?;
    let blocks = pem::parse_many(&bytes).map_err(|e| key_error(path, format!("not PEM: {e}")))?;
    if blocks.is_empty() {
        return Err(key_error(path, "no PEM block found"));
    }
    let mut keys = Vec::with_capacity(blocks.len());
    for block in blocks {
        let one = pem::encode(&block);
        let bad = |e: jsonwebtoken::errors::Error| key_error(path, format!("unusable key: {e}"));
        let (alg, key) =
            match block.tag() {
                "RSA PUBLIC KEY" => (
                    Algorithm::RS256,
                    DecodingKey::from_rsa_pem(one.as_bytes()).map_err(bad)?,
                ),
                "PUBLIC KEY" => match spki_key_type(block.contents()) {
                    Some(SpkiType::Rsa) => (
                        Algorithm::RS256,
                        DecodingKey::from_rsa_pem(one.as_bytes()).map_err(bad)?,
                    ),
                    Some(SpkiType::EcP256) => (
                        Algorithm::ES256,
                        DecodingKey::from_ec_pem(one.as_bytes()).map_err(bad)?,
                    ),
                    Some(SpkiType::EcP384) => (
                        Algorithm::ES384,
                        DecodingKey::from_ec_pem(one.as_bytes()).map_err(bad)?,
                    ),
                    Some(SpkiType::Ed25519) => (
                        Algorithm::EdDSA,
                        DecodingKey::from_ed_pem(one.as_bytes()).map_err(bad)?,
                    ),
                    None => return Err(key_error(
                        path,
                        "unsupported public key type (expected RSA, EC P-256, EC P-384 or Ed25519)",
                    )),
                },
                "CERTIFICATE" => {
                    return Err(key_error(
                        path,
                        "is a certificate; give the public key (openssl x509 -pubkey -noout)",
                    ))
                }
                tag if tag.contains("PRIVATE KEY") => {
                    return Err(key_error(
                        path,
                        "is a private key; give the public key (openssl pkey -pubout)",
                    ))
                }
                tag => return Err(key_error(path, format!("unexpected PEM block `{tag}`"))),
            };
        keys.push(VerifyKey {
            kid: None,
            alg,
            key,
        });
    }
    Ok(keys)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpkiType {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

/// The key type of a DER SubjectPublicKeyInfo, read from its AlgorithmIdentifier.
fn spki_key_type(der: &[u8]) -> Option<SpkiType> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    const EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
    let (spki, _) = der_item(der, 0x30)?;
    let (alg_id, _) = der_item(spki, 0x30)?;
    let (oid, rest) = der_item(alg_id, 0x06)?;
    match oid {
        RSA => Some(SpkiType::Rsa),
        ED25519 => Some(SpkiType::Ed25519),
        EC => match der_item(rest, 0x06)?.0 {
            P256 => Some(SpkiType::EcP256),
            P384 => Some(SpkiType::EcP384),
            _ => None,
        },
        _ => None,
    }
}

/// Splits one DER item with tag `tag` off the front of `der`: (contents, rest).
fn der_item(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, der) = der.split_first()?;
    if t != tag {
        return None;
    }
    let (&len0, der) = der.split_first()?;
    let (len, der) = if len0 < 0x80 {
        (usize::from(len0), der)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || der.len() < n {
            return None;
        }
        let (len_bytes, der) = der.split_at(n);
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, der)
    };
    if der.len() < len {
        return None;
    }
    Some(der.split_at(len))
}

/// The signing keys of a JWKS file. Entries marked `"use": "enc"` are skipped; symmetric
/// (`oct`) keys are refused (an HS256 secret comes from `hs256_secret_env`, never a file that
/// is meant to be public).
fn load_jwks(path: &Path) -> Result<Vec<VerifyKey>, IdentityError> {
    let bytes = read(path)?;
    let set: JwkSet =
        serde_json::from_slice(&bytes).map_err(|e| key_error(path, format!("not a JWKS: {e}")))?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let name = jwk
            .common
            .key_id
            .as_deref()
            .map_or_else(|| format!("key #{i}"), |k| format!("key `{k}`"));
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let by_type = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                ref c => return Err(key_error(path, format!("{name}: unsupported curve {c:?}"))),
            },
            AlgorithmParameters::OctetKeyPair(p) => {
                let x_len = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&p.x)
                    .map(|x| x.len())
                    .unwrap_or(0);
                if p.curve != EllipticCurve::Ed25519 || x_len != 32 {
                    return Err(key_error(
                        path,
                        format!("{name}: not an Ed25519 public key"),
                    ));
                }
                Algorithm::EdDSA
            }
            AlgorithmParameters::OctetKey(_) => {
                return Err(key_error(
                    path,
                    format!("{name}: symmetric (oct) keys are not accepted; use hs256_secret_env"),
                ))
            }
        };
        let alg = match jwk.common.key_algorithm {
            None => by_type,
            Some(ka) => {
                let alg = Algorithm::from_str(&format!("{ka:?}")).map_err(|_| {
                    key_error(
                        path,
                        format!("{name}: `alg` {ka:?} is not a signature algorithm"),
                    )
                })?;
                let fits = alg.family() == by_type.family()
                    && (alg.family() != AlgorithmFamily::Ec || alg == by_type);
                if !fits {
                    return Err(key_error(
                        path,
                        format!("{name}: `alg` {alg:?} does not fit the key type"),
                    ));
                }
                alg
            }
        };
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| key_error(path, format!("{name}: unusable key: {e}")))?;
        keys.push(VerifyKey {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    if keys.is_empty() {
        return Err(key_error(path, "no signing keys"));
    }
    Ok(keys)
}
