//! Approvers and operators on the admin plane (SPEC section 7): a bearer JWT or a static API
//! token, compared by SHA-256 in constant time. Everything but health answers 401 without one.

use http::HeaderMap;
use jitgate_rules::config::{Admin, JwtConfig};
use jitgate_rules::route::Principal;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{AuthError, IdentityError};
use crate::identity::{Identity, Via};
use crate::keys::JwtVerifier;
use crate::requester::bearer_token;

/// Authenticates admin-plane callers; built once per config (re)load.
pub struct AdminAuthenticator {
    jwt: Option<JwtVerifier>,
    api_tokens: Vec<ApiToken>,
    operators: Vec<Principal>,
}

struct ApiToken {
    user: String,
    sha256: [u8; 32],
    groups: Vec<String>,
}

// === impl AdminAuthenticator ===

impl AdminAuthenticator {
    /// From `[admin]`; JWTs are validated with `[admin.jwt]`, or `identity_jwt`
    /// (`[identity.jwt]`) when that is absent.
    pub fn from_config(
        admin: &Admin,
        identity_jwt: Option<&JwtConfig>,
    ) -> Result<Self, IdentityError> {
        Self::from_config_with_env(admin, identity_jwt, &|var| std::env::var(var).ok())
    }

    /// [`AdminAuthenticator::from_config`] with a given environment lookup.
    pub fn from_config_with_env(
        admin: &Admin,
        identity_jwt: Option<&JwtConfig>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, IdentityError> {
        let jwt = admin
            .jwt
            .as_ref()
            .or(identity_jwt)
            .map(|cfg| JwtVerifier::from_config(cfg, env))
            .transpose()?;
        let api_tokens = admin
            .api_tokens
            .iter()
            .map(|t| {
                Ok(ApiToken {
                    user: t.user.clone(),
                    sha256: parse_sha256(&t.sha256).ok_or_else(|| IdentityError::ApiTokenHash {
                        name: t.name.clone(),
                    })?,
                    groups: t.groups.clone(),
                })
            })
            .collect::<Result<_, IdentityError>>()?;
        Ok(Self {
            jwt,
            api_tokens,
            operators: admin.operators.clone(),
        })
    }

    /// Who is calling. API tokens are checked first (every one of them, in constant time);
    /// a bearer that is no API token must be a valid JWT. A token acts as its `user`, so one
    /// person's tokens (and their JWT) are one approver.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        let token = bearer_token(headers)?.ok_or(AuthError::Missing)?;
        if let Some(t) = self.api_token(token) {
            return Ok(Identity {
                user: Some(t.user.clone()),
                groups: t.groups.clone(),
                via: Via::ApiToken,
            });
        }
        match &self.jwt {
            Some(jwt) => jwt.verify(token),
            None => Err(AuthError::InvalidToken("unknown API token".into())),
        }
    }

    /// Whether `identity` may reload, revoke and read the audit log (`[admin] operators`).
    pub fn is_operator(&self, identity: &Identity) -> bool {
        self.operators.iter().any(|p| identity.is_member(p))
    }

    /// The API token whose hash matches. Compares against every entry without stopping early,
    /// so timing tells neither whether nor which token matched.
    fn api_token(&self, token: &str) -> Option<&ApiToken> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for t in &self.api_tokens {
            if bool::from(t.sha256.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        found
    }
}

/// 64 hex digits (either case) into 32 bytes.
fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |c: u8| char::from(c).to_digit(16);
        *o = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
