//! `[identity]` (who a requester is) and `[admin]` (who operates and decides).

use std::ops::Range;

use http::{HeaderName, Uri};
use serde::Deserialize;

use super::raw::{Field, Strings, Table, Tables};
use super::{is_name, Admin, ApiToken, Cx, Identity, IdentityHeaders, JwtConfig};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawIdentity {
    jwt: Option<Field<Table<RawJwt>>>,
    headers: Option<Field<Table<RawIdentityHeaders>>>,
    credential_headers: Option<Field<Strings>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawJwt {
    issuer: Option<Field<String>>,
    audience: Option<Field<String>>,
    hs256_secret_env: Option<Field<String>>,
    public_keys: Option<Field<Strings>>,
    jwks_file: Option<Field<String>>,
    groups_claim: Option<Field<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawIdentityHeaders {
    user: Option<Field<String>>,
    groups: Option<Field<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawAdmin {
    operators: Option<Field<Strings>>,
    jwt: Option<Field<Table<RawJwt>>>,
    api_tokens: Option<Field<Tables<RawApiToken>>>,
    public_url: Option<Field<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawApiToken {
    name: Option<Field<String>>,
    user: Option<Field<String>>,
    sha256: Option<Field<String>>,
    groups: Option<Field<Strings>>,
}

impl Cx<'_> {
    fn jwt(&mut self, t: &Table<RawJwt>, span: Range<usize>, sec: &str) -> Option<JwtConfig> {
        let issuer = self
            .string(&t.issuer, "issuer", sec)
            .map(|s| s.0.to_string());
        let audience = self
            .string(&t.audience, "audience", sec)
            .map(|s| s.0.to_string());
        let hs256_secret_env = self
            .string(&t.hs256_secret_env, "hs256_secret_env", sec)
            .and_then(|(s, sp)| {
                let valid = !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !s.as_bytes()[0].is_ascii_digit();
                if !valid {
                    self.error(sp, format!("`hs256_secret_env` in {sec} must be an environment variable name, not `{s}`"));
                }
                valid.then(|| s.to_string())
            });
        let public_keys = self
            .strings(&t.public_keys, "public_keys", sec)
            .map(|(ks, _)| {
                ks.into_iter()
                    .map(|(k, sp)| self.path(k, &sp))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let jwks_file = self.path_value(&t.jwks_file, "jwks_file", sec);
        let groups_claim = self
            .string(&t.groups_claim, "groups_claim", sec)
            .map_or_else(|| "groups".to_string(), |s| s.0.to_string());
        if t.hs256_secret_env.is_none() && t.public_keys.is_none() && t.jwks_file.is_none() {
            self.error(
                span,
                format!("{sec} needs a key: `hs256_secret_env`, `public_keys` or `jwks_file`"),
            );
            return None;
        }
        Some(JwtConfig {
            issuer,
            audience,
            hs256_secret_env,
            public_keys,
            jwks_file,
            groups_claim,
        })
    }

    pub(super) fn identity(&mut self, t: &Table<RawIdentity>) -> Option<Identity> {
        let mut ok = true;
        let mut credential_headers = self
            .header_names(&t.credential_headers, "credential_headers", "[identity]")
            .unwrap_or_else(|| Identity::default().credential_headers);
        credential_headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let jwt = match self.table(&t.jwt, "jwt", "[identity]", "[identity.jwt]") {
            Some((jt, span)) => {
                let j = self.jwt(jt, span, "[identity.jwt]");
                ok &= j.is_some();
                j
            }
            None => None,
        };
        let headers = match self.table(&t.headers, "headers", "[identity]", "[identity.headers]") {
            Some((ht, span)) => {
                let sec = "[identity.headers]";
                let header = |cx: &mut Self, f: &Option<Field<String>>, key: &str| {
                    cx.string(f, key, sec).and_then(|(s, sp)| {
                        match HeaderName::from_bytes(s.as_bytes()) {
                            Ok(h) => Some(h.as_str().to_string()),
                            Err(_) => {
                                cx.error(
                                    sp,
                                    format!("`{key}` in {sec} must be a header name, not `{s}`"),
                                );
                                None
                            }
                        }
                    })
                };
                let user = header(self, &ht.user, "user");
                let groups = header(self, &ht.groups, "groups");
                if user.is_none() {
                    if ht.user.is_none() {
                        self.error(span, "[identity.headers] needs `user`");
                    }
                    ok = false;
                }
                user.map(|user| IdentityHeaders { user, groups })
            }
            None => None,
        };
        ok.then_some(Identity {
            jwt,
            headers,
            credential_headers,
        })
    }

    pub(super) fn admin(&mut self, t: &Table<RawAdmin>) -> Option<Admin> {
        let sec = "[admin]";
        let mut ok = true;
        let operators = self
            .principals(&t.operators, "operators", sec)
            .map(|p| p.0)
            .unwrap_or_default();
        let jwt = match self.table(&t.jwt, "jwt", sec, "[admin.jwt]") {
            Some((jt, span)) => {
                let j = self.jwt(jt, span, "[admin.jwt]");
                ok &= j.is_some();
                j
            }
            None => None,
        };
        let mut api_tokens: Vec<ApiToken> = Vec::new();
        for (tt, span) in self.tables(&t.api_tokens, "api_tokens", sec) {
            let tsec = "[[admin.api_tokens]]";
            self.keys(tt, tsec);
            let name = self.string(&tt.name, "name", tsec);
            let user = self.string(&tt.user, "user", tsec);
            let sha = self.string(&tt.sha256, "sha256", tsec);
            let groups = self
                .strings(&tt.groups, "groups", tsec)
                .map(|g| g.0.into_iter().map(|(s, _)| s.to_string()).collect())
                .unwrap_or_default();
            match &name {
                None => {
                    self.error(span.clone(), "an api token needs `name`");
                    ok = false;
                }
                Some((n, sp)) if !is_name(n) => {
                    self.error(
                        sp.clone(),
                        format!(
                            "api token name `{n}` may only use letters, digits, `-`, `_` and `.`"
                        ),
                    );
                    ok = false;
                }
                Some((n, sp)) if api_tokens.iter().any(|t| t.name == *n) => {
                    self.error(sp.clone(), format!("api token name `{n}` is used twice"));
                    ok = false;
                }
                _ => {}
            }
            let user = match user {
                None => {
                    if tt.user.is_none() {
                        self.error(span.clone(), "an api token needs `user`, the person it acts as (two tokens of one person name the same user, so they count as one approver)");
                    }
                    None
                }
                Some((u, sp))
                    if u.is_empty() || u.chars().any(|c| c.is_whitespace() || c.is_control()) =>
                {
                    self.error(
                        sp,
                        format!("api token user `{u}` must be a non-empty name without spaces"),
                    );
                    None
                }
                Some((u, _)) => Some(u.to_string()),
            };
            let sha = match sha {
                None => {
                    self.error(
                        span,
                        "an api token needs `sha256` (the hex SHA-256 of the token)",
                    );
                    None
                }
                Some((s, sp)) if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    self.error(sp, "`sha256` of an api token must be 64 hex digits (the SHA-256 of the token, never the token itself)");
                    None
                }
                Some((s, _)) => Some(s.to_ascii_lowercase()),
            };
            match (name, user, sha) {
                (Some((n, _)), Some(user), Some(sha256)) => api_tokens.push(ApiToken {
                    name: n.to_string(),
                    user,
                    sha256,
                    groups,
                }),
                _ => ok = false,
            }
        }
        let public_url = match self.string(&t.public_url, "public_url", sec) {
            None => {
                ok &= t.public_url.is_none();
                None
            }
            Some((u, sp)) => match u.parse::<Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.host().is_some_and(|h| !h.is_empty())
                        && uri.query().is_none() =>
                {
                    Some(uri)
                }
                _ => {
                    self.error(sp, format!("`public_url` in [admin] must be an http(s) URL such as https://jitgate-admin.example.com, not `{u}`"));
                    ok = false;
                    None
                }
            },
        };
        ok.then_some(Admin {
            operators,
            jwt,
            api_tokens,
            public_url,
        })
    }
}
