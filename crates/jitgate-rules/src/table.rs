//! The rule table: a validated config plus its compiled matcher, swapped whole on reload.
//!
//! # Matching semantics
//!
//! Routes are tried in file order and the first that matches wins, like a firewall; a request
//! no route matches gets 404 from the gateway. A route matches when all of its conditions
//! hold: `methods`, `host`, `path`, `headers` and `source`.
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
use std::path::Path;

use crate::canon::CanonOptions;
use crate::config::{parse_config, Config, Upstream};
use crate::diag::{Diagnostic, Severity};
use crate::matcher::{path_captures, why_not, Matcher};
use crate::route::{RequestView, Route};

/// A parsed, validated and compiled `proxy.toml`.
#[derive(Debug)]
pub struct RuleTable {
    config: Config,
    matcher: Matcher,
    version: String,
    warnings: Vec<Diagnostic>,
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
        let version = crate::ticket::sha256_hex(src.as_bytes());
        Ok(RuleTable {
            config,
            matcher,
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

    /// Warnings found while parsing (shadowed routes, ignored keys, ...).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// Union of the routes' opt-ins (`allow_encoded_slash`, `allow_path_params`).
    pub fn canon_options(&self) -> CanonOptions {
        let rs = &self.config.routes;
        CanonOptions {
            allow_encoded_slash: rs.iter().any(|r| r.allow_encoded_slash),
            allow_path_params: rs.iter().any(|r| r.allow_path_params),
        }
    }

    /// First route in file order that matches; `None` = no route (the gateway answers 404).
    pub fn match_request(&self, req: &RequestView<'_>) -> Option<&Route> {
        let i = self.matcher.find(&self.config.routes, req)?;
        self.config.routes.get(i)
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
                why_not: why,
            });
            if ok {
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
    /// Why not, e.g. `method GET not in [POST, PUT]`.
    pub why_not: Option<String>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.steps {
            match &s.why_not {
                None => writeln!(f, "#{} {}: MATCH", s.route, s.name)?,
                Some(why) => writeln!(f, "#{} {}: no, {why}", s.route, s.name)?,
            }
        }
        match (self.matched, self.steps.last()) {
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
