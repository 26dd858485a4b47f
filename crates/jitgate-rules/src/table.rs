//! The rule table: a validated config plus its compiled matcher, swapped whole on reload.
//!
//! # Matching semantics
//!
//! Routes are tried in file order and the first that matches wins, like a firewall; a request
//! no route matches gets 404 from the gateway. A route matches when all of its conditions
//! hold: `methods`, `host`, `path`, `headers` and `source`. A shadow route (`enforce = false`)
//! never wins: it is reported (see [`RuleTable::shadows`]) and matching goes on, so adding
//! one never changes an outcome.
//!
//! A request can often be read more than one way: a method-override header gives a second
//! method, the canonicaliser may report alternative path readings, a header may be sent
//! twice or carry a comma-separated list. [`RequestView`] lists every reading, and:
//!
//! - a **restricting** route (`approve`, `deny`) matches if **any** reading matches (any
//!   method spelling, any path reading, any value of a constrained header);
//! - an **allow** route matches only if **every** reading matches (every method in its set,
//!   every path reading matching its pattern, every value of a constrained header equal to the
//!   wanted value; a `"*"` condition only needs the header to be present).
//!
//! This is fail-closed: an ambiguous request can fall into a stricter route, never into a more
//! permissive one by accident. Host and source have one reading each.
//!
//! Path patterns work on segment boundaries: `/admin/**` matches `/admin`, `/admin/` and
//! `/admin/x/y` but never `/administrator`; a trailing slash never changes the result; `*` and
//! `{name}` match exactly one non-empty segment; `case_insensitive = true` compares literal
//! segments ignoring ASCII case. The request path `*` (`OPTIONS *`) matches only `/**`.
//! A host pattern without a port matches that host on any port; `*.example.com` matches any
//! subdomain at any depth but never `example.com` itself; a route without `host` matches any
//! host, including none.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use http::HeaderName;

use crate::canon::CanonOptions;
use crate::config::{parse_config, Config, Upstream};
use crate::diag::{Diagnostic, Severity};
use crate::matcher::{path_captures, route_matches, route_matches_any_method, why_not, Matcher};
use crate::request::{Canonical, Edge};
use crate::route::{RequestView, Route};

/// A parsed, validated and compiled `proxy.toml`.
#[derive(Debug)]
pub struct RuleTable {
    config: Config,
    matcher: Matcher,
    /// Positions of the shadow routes, in file order.
    shadow: Vec<usize>,
    canon: CanonOptions,
    /// `[identity.headers]` names, for [`RuleTable::edge`].
    identity_headers: Vec<HeaderName>,
    /// The text this table was parsed from (served by `GET /v1/admin/rules/source`).
    source: String,
    version: String,
    warnings: Vec<Diagnostic>,
}

/// Why a canonical request resolved to no route it may use (the gateway answers 404 or 400).
#[derive(Debug, Clone, Copy)]
pub enum Unresolved<'t> {
    /// No enforcing route matches (404, fail closed).
    NoRoute,
    /// The path kept an opaque `%2F` and the matched route did not opt in (400).
    EncodedSlash(&'t Route),
    /// The path had `;` parameters and the matched route did not opt in (400).
    PathParams(&'t Route),
}

impl fmt::Display for Unresolved<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unresolved::NoRoute => write!(f, "no route in the rule table matches"),
            Unresolved::EncodedSlash(r) => write!(
                f,
                "encoded slash (%2F) in path; route {} does not allow it",
                r.name
            ),
            Unresolved::PathParams(r) => write!(
                f,
                "';' path parameters in path; route {} does not allow them",
                r.name
            ),
        }
    }
}

impl RuleTable {
    /// Parse and validate `src` (the text of `file`). Relative paths in the config (tls
    /// cert/key, ca_file, signing_key, public_keys, jwks_file) are resolved against `file`'s
    /// parent folder (no file is read here). `Err` carries every error found, plus warnings,
    /// each with file:line:column, sorted by position; `Ok`'s warnings are in [`Self::warnings`].
    pub fn parse(src: &str, file: &Path) -> Result<RuleTable, Vec<Diagnostic>> {
        let (config, mut diags) = parse_config(src, file);
        let Some(config) = config else {
            return Err(diags);
        };
        diags.sort_by_key(|d| (d.location.line, d.location.column));
        if diags.iter().any(|d| d.severity == Severity::Error) {
            return Err(diags);
        }
        let matcher = Matcher::new(&config.routes);
        let shadow = config
            .routes
            .iter()
            .filter(|r| !r.enforce)
            .map(|r| r.index)
            .collect();
        let rs = &config.routes;
        let canon = CanonOptions {
            allow_encoded_slash: rs.iter().any(|r| r.allow_encoded_slash),
            allow_path_params: rs.iter().any(|r| r.allow_path_params),
        };
        let identity_headers = config.identity.header_names();
        let version = crate::ticket::sha256_hex(src.as_bytes());
        Ok(RuleTable {
            config,
            matcher,
            shadow,
            canon,
            identity_headers,
            source: src.to_string(),
            version,
            warnings: diags,
        })
    }

    /// The whole config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The routes in file order.
    pub fn routes(&self) -> &[Route] {
        &self.config.routes
    }

    /// The route named `name`.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.config.routes.iter().find(|r| r.name == name)
    }

    /// The upstream named `name`.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.config.upstreams.iter().find(|u| u.name == name)
    }

    /// Lowercase hex SHA-256 of the source bytes.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The exact text this table was parsed from: what is in force, whatever the file on disk
    /// says now. Its SHA-256 is [`Self::version`].
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Warnings found while parsing (shadowed routes, ignored keys, ...).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// Union of the routes' opt-ins (`allow_encoded_slash`, `allow_path_params`).
    pub fn canon_options(&self) -> CanonOptions {
        self.canon
    }

    /// First enforcing route in file order that matches; `None` = no route (404).
    pub fn match_request(&self, req: &RequestView<'_>) -> Option<&Route> {
        let i = self.matcher.find(&self.config.routes, req)?;
        self.config.routes.get(i)
    }

    /// The edge settings of this table for a request from `peer` (over TLS or not): what
    /// [`Canonical::build`] needs, the same for the gateway and `explain`.
    pub fn edge(&self, peer: IpAddr, tls: bool) -> Edge<'_> {
        Edge {
            peer,
            tls,
            trusted_proxies: &self.config.server.trusted_proxies,
            identity_headers: &self.identity_headers,
            canon: self.canon,
        }
    }

    /// The `[identity.headers]` names: only a trusted proxy may send them.
    pub fn identity_headers(&self) -> &[HeaderName] {
        &self.identity_headers
    }

    /// The route a canonical request resolves to; refuses a route that did not opt in to what
    /// the request's path used (`%2F`, `;` parameters). This is the one way the gateway
    /// (serving and at every release) and `explain` pick a route.
    pub fn resolve(&self, c: &Canonical) -> Result<&Route, Unresolved<'_>> {
        let route = c
            .with_view(|v| self.match_request(v))
            .ok_or(Unresolved::NoRoute)?;
        if c.has_encoded_slash() && !route.allow_encoded_slash {
            return Err(Unresolved::EncodedSlash(route));
        }
        if c.has_path_params() && !route.allow_path_params {
            return Err(Unresolved::PathParams(route));
        }
        Ok(route)
    }

    /// Whether a method override found in the body could change which route `c` resolves to
    /// (`resolved`, `None` for none): when `resolved` is an allow route with a method list (an
    /// override it does not list makes it stop matching, and a later route, or none, decides),
    /// or when an enforcing `approve` or `deny` route with a method list before it matches `c`
    /// but for its method. Only then is a body worth reading for `_method` ([`crate::form`]).
    pub fn may_override_method(&self, c: &Canonical, resolved: Option<&Route>) -> bool {
        use crate::route::MethodSet;
        if resolved.is_some_and(|r| {
            r.action == crate::route::Action::Allow && matches!(r.methods, MethodSet::Only(_))
        }) {
            return true;
        }
        let limit = resolved.map_or(usize::MAX, |r| r.index);
        c.with_view(|v| {
            self.matcher
                .find_by(&self.config.routes, v, |r| {
                    r.index < limit
                        && r.action.is_restricting()
                        && matches!(r.methods, MethodSet::Only(_))
                        && route_matches_any_method(r, v)
                })
                .is_some()
        })
    }

    /// Whether the table has shadow routes (so callers can skip [`Self::shadows`]).
    pub fn has_shadows(&self) -> bool {
        !self.shadow.is_empty()
    }

    /// The shadow routes that match `c` before position `before` (every one when `None`):
    /// what they would have done is recorded, and they decide nothing.
    pub fn shadows(&self, c: &Canonical, before: Option<usize>) -> Vec<&Route> {
        if self.shadow.is_empty() {
            return Vec::new();
        }
        c.with_view(|v| {
            self.shadow
                .iter()
                .take_while(|i| before.is_none_or(|b| **i < b))
                .filter_map(|i| self.config.routes.get(*i))
                .filter(|r| route_matches(r, v))
                .collect()
        })
    }

    /// For `jitgate explain`: every route up to and including the match, with why it did not
    /// match. Uses the same semantics as [`Self::match_request`], route by route.
    pub fn explain(&self, req: &RequestView<'_>) -> Explanation {
        let mut steps = Vec::new();
        let mut matched = None;
        let mut captures = Vec::new();
        for r in &self.config.routes {
            let why = why_not(r, req);
            let ok = why.is_none();
            steps.push(ExplainStep {
                route: r.index,
                name: r.name.clone(),
                matched: ok,
                shadow: !r.enforce,
                why_not: why,
            });
            if ok && r.enforce {
                matched = Some(r.index);
                if let Some(p) = req.paths.first() {
                    path_captures(&r.path, r.case_insensitive, p, Some(&mut captures));
                }
                break;
            }
        }
        Explanation {
            steps,
            matched,
            captures,
            action: matched
                .and_then(|i| self.config.routes.get(i))
                .map(|r| r.action.as_str()),
        }
    }
}

/// The answer of [`RuleTable::explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Each route tried, in file order, up to and including the match.
    pub steps: Vec<ExplainStep>,
    /// Position of the matching route; `None` = no route matches (404).
    pub matched: Option<usize>,
    /// `{name}` segments of the matching route, from the canonical path.
    pub captures: Vec<(String, String)>,
    /// The matching route's action (`allow`, `deny`, `approve`).
    pub action: Option<&'static str>,
}

/// One route tried by [`RuleTable::explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainStep {
    /// Position in file order.
    pub route: usize,
    /// Route name.
    pub name: String,
    /// Whether it matched.
    pub matched: bool,
    /// A shadow route (`enforce = false`): it never decides, matching goes on.
    pub shadow: bool,
    /// Why not, e.g. `method GET not in [POST, PUT]`.
    pub why_not: Option<String>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.steps {
            match &s.why_not {
                None if s.shadow => writeln!(
                    f,
                    "#{} {}: matches, but it is a shadow route (enforce = false): recorded, matching goes on",
                    s.route, s.name
                )?,
                None => writeln!(f, "#{} {}: MATCH", s.route, s.name)?,
                Some(why) => writeln!(f, "#{} {}: no, {why}", s.route, s.name)?,
            }
        }
        match (
            self.matched,
            self.steps.iter().rfind(|s| s.matched && !s.shadow),
        ) {
            (Some(_), Some(s)) => {
                write!(f, "=> route `{}` ({})", s.name, self.action.unwrap_or("?"))?;
                if !self.captures.is_empty() {
                    let caps: Vec<String> = self
                        .captures
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    write!(f, " with {}", caps.join(", "))?;
                }
                Ok(())
            }
            _ => write!(f, "=> no route matches: 404"),
        }
    }
}
