//! Requester identification on the data plane (SPEC section 7).
//!
//! Order: a bearer JWT when `Authorization: Bearer` is present, else the trusted identity
//! headers from a trusted peer, else anonymous. A token that is present but invalid is an
//! error (401), never a fall back to anonymous.
//!
//! Without `[identity.jwt]` the `Authorization` header is not jitgate's: it is forwarded
//! untouched (the upstream may run its own authentication) and the requester is identified by
//! the trusted headers or is anonymous.

use std::net::IpAddr;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use jitgate_rules::config;

use crate::error::{AuthError, IdentityError};
use crate::identity::{Identity, Via};
use crate::keys::{split_groups, JwtVerifier};

/// Identifies requesters; built once per config (re)load.
pub struct Authenticator {
    jwt: Option<JwtVerifier>,
    headers: Option<TrustedHeaders>,
    trusted_proxies: Vec<IpNet>,
}

struct TrustedHeaders {
    user: HeaderName,
    groups: Option<HeaderName>,
}

// === impl Authenticator ===

impl Authenticator {
    /// Reads the keys and the HS256 secret `identity` names. Errors name the file or variable.
    pub fn from_config(
        identity: &config::Identity,
        trusted_proxies: &[IpNet],
    ) -> Result<Self, IdentityError> {
        Self::from_config_with_env(identity, trusted_proxies, &|var| std::env::var(var).ok())
    }

    /// [`Authenticator::from_config`] with a given environment lookup (tests, embedding).
    pub fn from_config_with_env(
        identity: &config::Identity,
        trusted_proxies: &[IpNet],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, IdentityError> {
        let jwt = identity
            .jwt
            .as_ref()
            .map(|cfg| JwtVerifier::from_config(cfg, env))
            .transpose()?;
        let headers = match &identity.headers {
            Some(h) => Some(TrustedHeaders {
                user: header_name(&h.user)?,
                groups: h.groups.as_deref().map(header_name).transpose()?,
            }),
            None => None,
        };
        Ok(Self {
            jwt,
            headers,
            trusted_proxies: trusted_proxies.to_vec(),
        })
    }

    /// Whether `peer` is one of `trusted_proxies`, whose identity headers are believed.
    pub fn is_trusted_peer(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }

    /// Whether `[identity.jwt]` is configured, i.e. whether `Authorization` is jitgate's.
    pub fn validates_jwt(&self) -> bool {
        self.jwt.is_some()
    }

    /// Who sent a request with these headers; `peer_trusted` is [`Self::is_trusted_peer`] of
    /// the connection's address.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        peer_trusted: bool,
    ) -> Result<Identity, AuthError> {
        if let Some(jwt) = &self.jwt {
            if let Some(token) = bearer_token(headers)? {
                return jwt.verify(token);
            }
        }
        if let (Some(h), true) = (&self.headers, peer_trusted) {
            if let Some(id) = h.identity(headers)? {
                return Ok(id);
            }
        }
        Ok(Identity::anonymous())
    }
}

fn header_name(name: &str) -> Result<HeaderName, IdentityError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| IdentityError::HeaderName {
        name: name.to_string(),
    })
}

/// The token of the one `Authorization: Bearer <token>` header; `None` without the header.
/// Another scheme, an empty token or several `Authorization` headers are malformed.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::MalformedAuthorization);
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::MalformedAuthorization)?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(AuthError::MalformedAuthorization)?;
    let token = token.trim_matches(' ');
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(AuthError::MalformedAuthorization);
    }
    Ok(Some(token))
}

// === impl TrustedHeaders ===

impl TrustedHeaders {
    /// The identity the trusted proxy states; `None` when it sends no user header (groups
    /// without a user are ignored: a membership needs someone to belong).
    fn identity(&self, headers: &HeaderMap) -> Result<Option<Identity>, AuthError> {
        let text = |name: &HeaderName| -> Result<Option<String>, AuthError> {
            let mut values = headers.get_all(name).iter();
            let Some(v) = values.next() else {
                return Ok(None);
            };
            // Two user headers would be two claims of who this is; refuse rather than pick.
            if name == self.user && values.next().is_some() {
                return Err(AuthError::MalformedIdentityHeader(name.to_string()));
            }
            let mut all = vec![v];
            all.extend(values);
            let joined = all
                .iter()
                .map(|v| v.to_str().map(str::trim))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| AuthError::MalformedIdentityHeader(name.to_string()))?
                .join(",");
            Ok(Some(joined))
        };
        let Some(user) = text(&self.user)?.filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let groups = match &self.groups {
            Some(g) => text(g)?.as_deref().map(split_groups).unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(Some(Identity {
            user: Some(user),
            groups,
            via: Via::TrustedHeaders,
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests;
