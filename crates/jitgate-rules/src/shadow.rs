//! Shadowing analysis: routes that can never match because an earlier route covers them.
//!
//! Route A *covers* a later route B when every request B matches, A matches too, so B is
//! dead. Coverage is judged on unambiguous requests (one method, one path reading, one value
//! per header), which is what nearly all traffic is; and only what can be proved is reported:
//!
//! - methods: A's set ⊇ B's (no `methods` = every method);
//! - host: A without host covers all; `*.example.com` covers hosts and wildcards under it; an
//!   exact host covers the same host (a pattern without port also covers it with any port);
//! - path, segment by segment: an A literal covers an equal B literal (ignoring ASCII case
//!   only when A is `case_insensitive`; a case-sensitive A never covers a case-insensitive B);
//!   A `*`/`{x}` covers any one B segment except `**`; A's trailing `**` covers all of B's
//!   rest, and B's `**` is covered only by an A `**` at the same or a shorter depth;
//! - headers: every A condition is implied by B's (a value condition by the same value, a
//!   presence condition by any condition on that header);
//! - source: A without `source` covers all; otherwise each B CIDR is inside one A CIDR.
//!
//! `allow_encoded_slash` and `allow_path_params` are ignored: they do not change which route
//! a request matches, only whether the gateway then refuses it (when the matched route did
//! not opt in). A request B opted in for still matches A first, so B is still dead.
//!
//! Only enforcing routes cover: a shadow route (`enforce = false`) never decides, matching
//! goes on past it, so it hides nothing behind it. An enforcing `approve` or `deny` route
//! covered by an earlier `allow` route is an error (a silent security hole); any other
//! covered route (a shadow one included: it would never observe anything) is a warning.
//!
//! Cost: earlier routes are indexed in the same segment tries as the matcher, queried with
//! B's pattern, so a table of 10,000 routes is checked without comparing every pair.

use ipnet::IpNet;

use crate::diag::{Diagnostic, Severity};
use crate::matcher::{host_name, Trie};
use crate::route::{Action, HeaderRule, HostPattern, MethodSet, PathPattern, Route, Segment};

/// Whether earlier route `a` covers later route `b` (see the module docs).
pub fn covers(a: &Route, b: &Route) -> bool {
    methods_cover(&a.methods, &b.methods)
        && host_covers(a.host.as_ref(), b.host.as_ref())
        && path_covers(&a.path, a.case_insensitive, &b.path, b.case_insensitive)
        && headers_cover(&a.headers, &b.headers)
        && source_covers(&a.source, &b.source)
}

fn methods_cover(a: &MethodSet, b: &MethodSet) -> bool {
    match (a, b) {
        (MethodSet::Any, _) => true,
        (MethodSet::Only(_), MethodSet::Any) => false,
        (MethodSet::Only(a), MethodSet::Only(b)) => b.iter().all(|m| a.contains(m)),
    }
}

fn host_covers(a: Option<&HostPattern>, b: Option<&HostPattern>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(HostPattern::Exact(a)), Some(HostPattern::Exact(b))) => {
            a == b || (host_name(a).len() == a.len() && host_name(b) == a)
        }
        (Some(HostPattern::Exact(_)), Some(HostPattern::Suffix(_))) => false,
        (Some(HostPattern::Suffix(s)), Some(HostPattern::Exact(b))) => {
            let n = host_name(b);
            n.len() > s.len() && n.ends_with(s.as_str())
        }
        (Some(HostPattern::Suffix(s)), Some(HostPattern::Suffix(t))) => t.ends_with(s.as_str()),
    }
}

/// Segment-wise path coverage; see the module docs.
pub fn path_covers(a: &PathPattern, a_ci: bool, b: &PathPattern, b_ci: bool) -> bool {
    if b_ci && !a_ci {
        return false;
    }
    for (i, bs) in b.segments.iter().enumerate() {
        let Some(as_) = a.segments.get(i) else {
            return a.rest;
        };
        let ok = match (as_, bs) {
            (Segment::Any | Segment::Named(_), _) => true,
            (Segment::Literal(x), Segment::Literal(y)) => {
                if a_ci {
                    x.eq_ignore_ascii_case(y)
                } else {
                    x == y
                }
            }
            (Segment::Literal(_), _) => false,
        };
        if !ok {
            return false;
        }
    }
    if a.segments.len() > b.segments.len() {
        return false;
    }
    if b.rest {
        a.rest
    } else {
        true
    }
}

fn headers_cover(a: &[HeaderRule], b: &[HeaderRule]) -> bool {
    a.iter().all(|ah| match &ah.value {
        None => b.iter().any(|bh| bh.name == ah.name),
        Some(v) => b
            .iter()
            .any(|bh| bh.name == ah.name && bh.value.as_ref() == Some(v)),
    })
}

fn source_covers(a: &[IpNet], b: &[IpNet]) -> bool {
    a.is_empty() || (!b.is_empty() && b.iter().all(|bn| a.iter().any(|an| an.contains(bn))))
}

/// Collects the earlier routes whose path could cover `b`'s, from a trie built over them.
fn candidates(t: &Trie, b: &[Segment], b_rest: bool, query_lower: bool, out: &mut Vec<u32>) {
    if t.is_empty() {
        return;
    }
    walk(t, 0, b, b_rest, query_lower, out);
}

fn walk(t: &Trie, node: u32, b: &[Segment], b_rest: bool, lower: bool, out: &mut Vec<u32>) {
    let n = &t.nodes[node as usize];
    out.extend_from_slice(&n.rest);
    let Some((first, more)) = b.split_first() else {
        if !b_rest {
            out.extend_from_slice(&n.exact);
        }
        return;
    };
    if let Segment::Literal(l) = first {
        let child = if lower {
            t.child(node, &l.to_ascii_lowercase())
        } else {
            n.lit.get(l.as_str()).copied()
        };
        if let Some(c) = child {
            walk(t, c, more, b_rest, lower, out);
        }
    }
    if let Some(w) = n.wild {
        walk(t, w, more, b_rest, lower, out);
    }
}

/// Every shadowed route, as errors (restricting route under an allow route) and warnings.
pub fn analyse(routes: &[Route]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut cs = Trie::new(false);
    let mut ci = Trie::new(true);
    let mut cand = Vec::new();
    for (bi, b) in routes.iter().enumerate() {
        cand.clear();
        if !b.case_insensitive {
            candidates(&cs, &b.path.segments, b.path.rest, false, &mut cand);
        }
        candidates(&ci, &b.path.segments, b.path.rest, true, &mut cand);
        cand.sort_unstable();
        cand.dedup();
        let mut first: Option<&Route> = None;
        let mut first_allow: Option<&Route> = None;
        for &ai in &cand {
            let Some(a) = routes.get(ai as usize) else {
                continue;
            };
            if covers(a, b) {
                first.get_or_insert(a);
                if a.action == Action::Allow {
                    first_allow.get_or_insert(a);
                    break;
                }
            }
        }
        match (first_allow, first) {
            (Some(a), _) if b.action.is_restricting() && b.enforce => out.push(Diagnostic {
                severity: Severity::Error,
                location: b.location.clone(),
                message: format!(
                    "{} route `{}` can never match: allow route `{}` ({}) matches every request it would, so they pass unchecked",
                    b.action.as_str(), b.name, a.name, a.location
                ),
            }),
            (_, Some(a)) => out.push(Diagnostic {
                severity: Severity::Warning,
                location: b.location.clone(),
                message: format!("route `{}` can never match: {} route `{}` ({}) comes first and matches every request it would", b.name, a.action.as_str(), a.name, a.location),
            }),
            _ => {}
        }
        if !b.enforce {
            continue;
        }
        let i = u32::try_from(bi).unwrap_or(u32::MAX);
        if b.case_insensitive {
            ci.insert(&b.path, i)
        } else {
            cs.insert(&b.path, i)
        }
    }
    out
}

#[cfg(test)]
mod tests;
