//! The compiled matcher: finds the first route (in file order) that matches a request.
//!
//! Routes are compiled into segment tries keyed by literal path segment, one for
//! case-sensitive routes and one (with lowercased literals) for `case_insensitive` ones, with a
//! `*`/`{name}` child per node, and at each node the routes whose pattern ends there (`exact`)
//! or ends there in `**` (`rest`), each list in file order. Routes with an exact `host` get
//! their own pair of tries per host name, so a table of many virtual hosts stays cheap.
//!
//! Matching walks the tries for every path reading and, for each candidate list met on the
//! way, checks candidates (in file order, only those earlier than the best found so far) with
//! the full semantics of [`route_matches`]. The tries only narrow the search: a route found
//! through them is still checked completely, so the index can never make a route match that
//! the reference semantics would not. The property test in `tests.rs` compares the result
//! with a linear scan over [`route_matches`].
//!
//! Performance: no allocation per request unless a case-insensitive route exists and the
//! path has uppercase letters; a few hash lookups per path segment (an FxHash-style hasher:
//! the keys come from the config, so a client cannot grow a bucket).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use http::HeaderMap;

use crate::route::{HeaderRule, HostPattern, MethodSet, PathPattern, RequestView, Route, Segment};

// === matching semantics (the reference) ===

/// The non-empty segments of a canonical path (a trailing slash adds none).
pub fn path_segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// The host without its port: `api.example.com:8443` → `api.example.com`, `[::1]:80` → `[::1]`.
pub fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.split_once(':') {
        Some((name, port)) if !port.contains(':') => name,
        _ => host,
    }
}

/// Whether `host` (canonical: lowercase, no trailing dot, no default port) matches `p`.
/// A pattern without a port matches the host on any port, as nginx's `server_name` does; a
/// pattern with a port needs that port.
pub fn host_matches(p: &HostPattern, host: &str) -> bool {
    match p {
        HostPattern::Exact(h) => {
            if host_name(h).len() == h.len() {
                host_name(host) == h
            } else {
                host == h
            }
        }
        HostPattern::Suffix(s) => {
            let name = host_name(host);
            name.len() > s.len() && name.ends_with(s.as_str())
        }
    }
}

/// Whether one path reading matches `p`. The path `*` (`OPTIONS *`) matches only `/**`.
pub fn path_matches(p: &PathPattern, case_insensitive: bool, path: &str) -> bool {
    path_captures(p, case_insensitive, path, None)
}

/// [`path_matches`], collecting `{name}` segments into `captures` when given.
pub(crate) fn path_captures(
    p: &PathPattern,
    case_insensitive: bool,
    path: &str,
    mut captures: Option<&mut Vec<(String, String)>>,
) -> bool {
    if path == "*" {
        return p.segments.is_empty() && p.rest;
    }
    let mut segs = path_segments(path);
    for s in &p.segments {
        let Some(x) = segs.next() else { return false };
        match s {
            Segment::Literal(l) => {
                let eq = if case_insensitive {
                    l.eq_ignore_ascii_case(x)
                } else {
                    l == x
                };
                if !eq {
                    return false;
                }
            }
            Segment::Any => {}
            Segment::Named(n) => {
                if let Some(c) = captures.as_deref_mut() {
                    c.push((n.clone(), x.to_string()));
                }
            }
        }
    }
    p.rest || segs.next().is_none()
}

/// The readings of one header: each field line, and also each comma-separated element of a
/// line that has commas (upstreams commonly read `a, b` as a list).
fn header_readings<'h>(
    headers: &'h HeaderMap,
    rule: &HeaderRule,
) -> impl Iterator<Item = &'h [u8]> {
    headers.get_all(&rule.name).iter().flat_map(|v| {
        let b = v.as_bytes();
        let parts = b
            .contains(&b',')
            .then(|| b.split(|c| *c == b',').map(<[u8]>::trim_ascii));
        std::iter::once(b).chain(parts.into_iter().flatten())
    })
}

/// Whether a header condition holds: present, and with a value, equal to it in any reading
/// (restricting routes) or in every reading (`all`: allow routes and auto-approval).
pub(crate) fn header_matches(rule: &HeaderRule, headers: &HeaderMap, all: bool) -> bool {
    if !headers.contains_key(&rule.name) {
        return false;
    }
    match &rule.value {
        None => true,
        Some(v) if all => header_readings(headers, rule).all(|x| x == v.as_bytes()),
        Some(v) => header_readings(headers, rule).any(|x| x == v.as_bytes()),
    }
}

fn source_matches(r: &Route, req: &RequestView<'_>) -> bool {
    r.source.is_empty() || {
        let ip = req.source.to_canonical();
        r.source.iter().any(|n| n.contains(&ip))
    }
}

/// Whether a route's method list admits `m`. A list naming GET also admits HEAD, as in
/// nginx's `limit_except`: servers answer HEAD with their GET handler, so a GET-only
/// restricting route must catch HEAD too.
pub fn method_in(set: &[http::Method], m: &http::Method) -> bool {
    set.contains(m) || (*m == http::Method::HEAD && set.contains(&http::Method::GET))
}

/// [`route_matches`] with the method condition left out: whether some method reading could
/// make `r` match.
pub fn route_matches_any_method(r: &Route, req: &RequestView<'_>) -> bool {
    let all = !r.action.is_restricting();
    r.host.as_ref().is_none_or(|h| host_matches(h, req.host))
        && paths_match(r, req, all)
        && r.headers
            .iter()
            .all(|h| header_matches(h, req.headers, all))
        && source_matches(r, req)
}

fn methods_match(r: &Route, req: &RequestView<'_>, all: bool) -> bool {
    match &r.methods {
        MethodSet::Any => true,
        MethodSet::Only(set) if all => {
            !req.methods.is_empty() && req.methods.iter().all(|m| method_in(set, m))
        }
        MethodSet::Only(set) => req.methods.iter().any(|m| method_in(set, m)),
    }
}

fn paths_match(r: &Route, req: &RequestView<'_>, all: bool) -> bool {
    let m = |p: &&str| path_matches(&r.path, r.case_insensitive, p);
    if all {
        !req.paths.is_empty() && req.paths.iter().all(m)
    } else {
        req.paths.iter().any(m)
    }
}

/// The matching semantics, one route at a time: restricting routes (`approve`, `deny`) match
/// if *any* reading of the request matches, `allow` routes only if *every* reading does.
pub fn route_matches(r: &Route, req: &RequestView<'_>) -> bool {
    let all = !r.action.is_restricting();
    methods_match(r, req, all)
        && r.host.as_ref().is_none_or(|h| host_matches(h, req.host))
        && paths_match(r, req, all)
        && r.headers
            .iter()
            .all(|h| header_matches(h, req.headers, all))
        && source_matches(r, req)
}

/// How a host pattern is written in proxy.toml.
pub fn host_pattern_str(p: &HostPattern) -> String {
    match p {
        HostPattern::Exact(h) => h.clone(),
        HostPattern::Suffix(s) => format!("*{s}"),
    }
}

fn list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    format!("[{}]", v.join(", "))
}

/// Why `r` does not match `req` (the first failing condition), or `None` when it matches.
pub fn why_not(r: &Route, req: &RequestView<'_>) -> Option<String> {
    let all = !r.action.is_restricting();
    let quant = if all { "every" } else { "any" };
    if !methods_match(r, req, all) {
        if let MethodSet::Only(methods) = &r.methods {
            let set = list(methods);
            return Some(match req.methods {
                [] => format!("no method; route needs one of {set}"),
                [m] => format!("method {m} not in {set}"),
                ms if all => {
                    let bad = ms
                        .iter()
                        .find(|m| !method_in(methods, m))
                        .map_or(String::new(), |m| m.to_string());
                    format!("method {bad} (of {}) not in {set}; an allow route needs every method spelling to match", list(ms))
                }
                ms => format!("no method of {} in {set}", list(ms)),
            });
        }
    }
    if let Some(h) = &r.host {
        if !host_matches(h, req.host) {
            let shown = if req.host.is_empty() {
                "(none)"
            } else {
                req.host
            };
            return Some(format!(
                "host {shown} does not match {}",
                host_pattern_str(h)
            ));
        }
    }
    if !paths_match(r, req, all) {
        let pat = &r.path.source;
        let ci = if r.case_insensitive {
            " (case-insensitive)"
        } else {
            ""
        };
        return Some(match req.paths {
            [] => format!("no path; route needs {pat}"),
            [p] => format!("path {p} does not match {pat}{ci}"),
            ps if all => {
                let bad = ps
                    .iter()
                    .find(|p| !path_matches(&r.path, r.case_insensitive, p))
                    .copied()
                    .unwrap_or("");
                format!("path reading {bad} does not match {pat}{ci}; an allow route needs every reading to match")
            }
            ps => format!("no path reading of {} matches {pat}{ci}", list(ps)),
        });
    }
    for h in &r.headers {
        if !header_matches(h, req.headers, all) {
            return Some(match (&h.value, req.headers.contains_key(&h.name)) {
                (_, false) => format!("header {} is missing", h.name),
                (Some(v), true) => format!(
                    "header {} does not equal {v:?} ({quant} value must)",
                    h.name
                ),
                (None, true) => format!("header {} is missing", h.name),
            });
        }
    }
    if !source_matches(r, req) {
        return Some(format!("source {} not in {}", req.source, list(&r.source)));
    }
    None
}

// === impl Trie ===

/// FxHash-style hasher: fast on short keys. Safe here because the keys are route literals
/// from the config; a client only looks keys up and cannot lengthen a chain.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxBuild;

pub(crate) struct Fx(u64);

impl BuildHasher for FxBuild {
    type Hasher = Fx;
    fn build_hasher(&self) -> Fx {
        Fx(0)
    }
}

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(b))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug, Default)]
pub(crate) struct Node {
    pub(crate) lit: HashMap<Box<str>, u32, FxBuild>,
    pub(crate) wild: Option<u32>,
    /// Routes whose pattern ends at this node without `**`.
    pub(crate) exact: Vec<u32>,
    /// Routes whose pattern ends at this node with `**`.
    pub(crate) rest: Vec<u32>,
}

/// A segment trie over path patterns. `lower` tries hold lowercased literals.
#[derive(Debug)]
pub(crate) struct Trie {
    pub(crate) nodes: Vec<Node>,
    pub(crate) lower: bool,
}

impl Trie {
    pub(crate) fn new(lower: bool) -> Trie {
        Trie {
            nodes: vec![Node::default()],
            lower,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.nodes.len() == 1 && self.nodes[0].exact.is_empty() && self.nodes[0].rest.is_empty()
    }

    pub(crate) fn insert(&mut self, p: &PathPattern, route: u32) {
        let mut at = 0usize;
        for s in &p.segments {
            let next = match s {
                Segment::Literal(l) => {
                    let key: Box<str> = if self.lower {
                        l.to_ascii_lowercase().into()
                    } else {
                        l.as_str().into()
                    };
                    self.nodes[at].lit.get(&key).copied().unwrap_or_else(|| {
                        let n = self.push();
                        self.nodes[at].lit.insert(key, n);
                        n
                    })
                }
                Segment::Any | Segment::Named(_) => match self.nodes[at].wild {
                    Some(n) => n,
                    None => {
                        let n = self.push();
                        self.nodes[at].wild = Some(n);
                        n
                    }
                },
            };
            at = next as usize;
        }
        let node = &mut self.nodes[at];
        if p.rest {
            node.rest.push(route)
        } else {
            node.exact.push(route)
        }
    }

    fn push(&mut self) -> u32 {
        self.nodes.push(Node::default());
        u32::try_from(self.nodes.len() - 1).unwrap_or(u32::MAX)
    }

    pub(crate) fn child(&self, node: u32, seg: &str) -> Option<u32> {
        let lit = &self.nodes[node as usize].lit;
        if lit.is_empty() {
            return None;
        }
        if self.lower && seg.bytes().any(|b| b.is_ascii_uppercase()) {
            lit.get(seg.to_ascii_lowercase().as_str()).copied()
        } else {
            lit.get(seg).copied()
        }
    }

    /// Calls `visit` with every candidate list for one path reading.
    fn walk(&self, node: u32, path: &str, visit: &mut impl FnMut(&[u32])) {
        let n = &self.nodes[node as usize];
        if !n.rest.is_empty() {
            visit(&n.rest);
        }
        let trimmed = path.trim_start_matches('/');
        if trimmed.is_empty() {
            if !n.exact.is_empty() {
                visit(&n.exact);
            }
            return;
        }
        let (seg, rem) = match trimmed.find('/') {
            Some(i) => trimmed.split_at(i),
            None => (trimmed, ""),
        };
        if let Some(c) = self.child(node, seg) {
            self.walk(c, rem, visit);
        }
        if let Some(w) = n.wild {
            self.walk(w, rem, visit);
        }
    }

    fn candidates(&self, path: &str, visit: &mut impl FnMut(&[u32])) {
        if self.is_empty() {
            return;
        }
        if path == "*" {
            let root = &self.nodes[0];
            if !root.rest.is_empty() {
                visit(&root.rest);
            }
            return;
        }
        self.walk(0, path, visit);
    }
}

#[derive(Debug)]
struct Tries {
    cs: Trie,
    ci: Trie,
}

impl Tries {
    fn new() -> Tries {
        Tries {
            cs: Trie::new(false),
            ci: Trie::new(true),
        }
    }
    fn insert(&mut self, r: &Route, i: u32) {
        if r.case_insensitive {
            self.ci.insert(&r.path, i)
        } else {
            self.cs.insert(&r.path, i)
        }
    }
    fn candidates(&self, path: &str, visit: &mut impl FnMut(&[u32])) {
        self.cs.candidates(path, visit);
        self.ci.candidates(path, visit);
    }
}

// === impl Matcher ===

/// The compiled index over a route list. It stores route positions only; pass the same
/// slice to [`Matcher::find`].
#[derive(Debug)]
pub struct Matcher {
    by_host: HashMap<Box<str>, Tries, FxBuild>,
    general: Tries,
    len: usize,
}

impl Matcher {
    /// Compiles `routes` (in file order).
    pub fn new(routes: &[Route]) -> Matcher {
        let mut m = Matcher {
            by_host: HashMap::default(),
            general: Tries::new(),
            len: routes.len(),
        };
        // Shadow routes (`enforce = false`) never decide: they are not indexed, so matching
        // goes on past them (the table reports them separately).
        for (i, r) in routes.iter().enumerate().filter(|(_, r)| r.enforce) {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            match &r.host {
                Some(HostPattern::Exact(h)) => m
                    .by_host
                    .entry(host_name(h).into())
                    .or_insert_with(Tries::new)
                    .insert(r, i),
                _ => m.general.insert(r, i),
            }
        }
        m
    }

    /// The position of the first enforcing route in `routes` that matches `req`.
    pub fn find(&self, routes: &[Route], req: &RequestView<'_>) -> Option<usize> {
        self.find_by(routes, req, |r| route_matches(r, req))
    }

    /// The position of the first enforcing route in `routes` for which `pred` holds, among
    /// those whose path pattern can match one of `req`'s path readings (so `pred` must imply
    /// a path match, as [`route_matches`] does).
    pub fn find_by(
        &self,
        routes: &[Route],
        req: &RequestView<'_>,
        pred: impl Fn(&Route) -> bool,
    ) -> Option<usize> {
        if routes.len() != self.len {
            return routes.iter().position(|r| r.enforce && pred(r));
        }
        let mut best = usize::MAX;
        let mut visit = |list: &[u32]| {
            for &i in list {
                let i = i as usize;
                if i >= best {
                    break;
                }
                if routes.get(i).is_some_and(&pred) {
                    best = i;
                    break;
                }
            }
        };
        let host = self.by_host.get(host_name(req.host));
        for p in req.paths {
            if let Some(t) = host {
                t.candidates(p, &mut visit);
            }
            self.general.candidates(p, &mut visit);
        }
        (best != usize::MAX).then_some(best)
    }
}

#[cfg(test)]
pub(crate) mod tests;
