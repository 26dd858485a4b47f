//! Development tokens for `jitgate token`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::error::TokenError;
use crate::keys::ensure_crypto_provider;

/// An HS256 JWT for `sub` with `groups` under `groups_claim`, valid for `ttl` from now, with
/// `iss` and `aud` when given: what `[identity.jwt]` with `hs256_secret_env` accepts.
pub fn mint_hs256(
    secret: &[u8],
    sub: &str,
    groups: &[String],
    groups_claim: &str,
    ttl: Duration,
    iss: Option<&str>,
    aud: Option<&str>,
) -> Result<String, TokenError> {
    ensure_crypto_provider();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut claims = Map::new();
    claims.insert("sub".into(), sub.into());
    claims.insert(groups_claim.into(), groups.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), now.saturating_add(ttl.as_secs()).into());
    if let Some(iss) = iss {
        claims.insert("iss".into(), iss.into());
    }
    if let Some(aud) = aud {
        claims.insert("aud".into(), aud.into());
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &Value::Object(claims),
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| TokenError::Sign(e.to_string()))
}

#[cfg(test)]
mod tests;
