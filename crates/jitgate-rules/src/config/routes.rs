//! `[[routes]]`: what a request is matched on, what happens to it, and `[routes.error]`.

use std::collections::HashSet;
use std::ops::Range;

use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::approval::RawApproval;
use super::raw::{span_of, Field, Map, Strings, Table};
use super::{
    default_problem_body, parse_host_pattern, parse_path_pattern, placeholders, suggest, Approvals,
    Cx, Escaping, RawConfig, Upstream, DEFAULT_ERROR_CONTENT_TYPE, ERROR_PLACEHOLDERS,
    PROBLEM_JSON,
};
use crate::route::{Action, ErrorTemplate, HeaderRule, MethodSet, PathPattern, Route};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawRoute {
    pub(super) name: Option<Field<String>>,
    methods: Option<Field<Strings>>,
    host: Option<Field<String>>,
    path: Option<Field<String>>,
    pub(super) headers: Option<Field<Map<String>>>,
    source: Option<Field<Strings>>,
    upstream: Option<Field<String>>,
    action: Option<Field<String>>,
    case_insensitive: Option<Field<bool>>,
    allow_encoded_slash: Option<Field<bool>>,
    allow_path_params: Option<Field<bool>>,
    enforce: Option<Field<bool>>,
    error: Option<Field<Table<RawError>>>,
    pub(super) approval: Option<Field<Table<RawApproval>>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawError {
    status: Option<Field<i64>>,
    content_type: Option<Field<String>>,
    body: Option<Field<String>>,
}

impl Cx<'_> {
    pub(super) fn routes(
        &mut self,
        doc: &Table<RawConfig>,
        upstreams: &[Upstream],
        approvals: Option<&Approvals>,
    ) -> Vec<Route> {
        let mut out: Vec<Route> = Vec::new();
        let mut names: HashSet<String> = HashSet::new();
        for (i, (t, span)) in self
            .tables(&doc.routes, "routes", "the top level")
            .into_iter()
            .enumerate()
        {
            if let Some(mut r) = self.route(t, span, i, upstreams, approvals, &names) {
                names.insert(r.name.clone());
                r.index = out.len();
                r.definition_hash = definition_hash(&r);
                out.push(r);
            } else if let Some(Ok(n)) = t.name.as_ref().map(|f| &f.value) {
                names.insert(n.clone());
            }
        }
        if doc.routes.is_none() {
            self.warn(0..0, "no [[routes]]: every request will be answered 404");
        }
        out
    }

    fn route(
        &mut self,
        t: &Table<RawRoute>,
        span: Range<usize>,
        index: usize,
        upstreams: &[Upstream],
        approvals: Option<&Approvals>,
        names: &HashSet<String>,
    ) -> Option<Route> {
        let sec = "[[routes]]";
        self.keys(t, sec);
        let mut ok = true;
        let name = match self.string(&t.name, "name", sec) {
            None => {
                if t.name.is_none() {
                    self.error(span.clone(), "a route needs `name`");
                }
                None
            }
            Some((n, sp)) if !super::is_name(n) => {
                self.error(
                    sp,
                    format!("route name `{n}` may only use letters, digits, `-`, `_` and `.`"),
                );
                None
            }
            Some((n, sp)) if names.contains(n) => {
                self.error(sp, format!("route name `{n}` is used twice"));
                None
            }
            Some((n, _)) => Some(n.to_string()),
        };
        let action = match self.string(&t.action, "action", sec) {
            None => {
                if t.action.is_none() {
                    self.error(
                        span.clone(),
                        "a route needs `action` (allow, deny or approve)",
                    );
                }
                None
            }
            Some(("allow", _)) => Some(Action::Allow),
            Some(("deny", _)) => Some(Action::Deny),
            Some(("approve", _)) => Some(Action::Approve),
            Some((a, sp)) => {
                let hint = suggest(a, &["allow", "deny", "approve"])
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                self.error(
                    sp,
                    format!("`action` must be \"allow\", \"deny\" or \"approve\", not `{a}`{hint}"),
                );
                None
            }
        };
        let upstream = match self.string(&t.upstream, "upstream", sec) {
            Some((u, sp)) => {
                if !upstreams.iter().any(|x| x.name == u)
                    && !self.broken_upstreams.iter().any(|x| x == u)
                {
                    let known: Vec<&str> = upstreams.iter().map(|x| x.name.as_str()).collect();
                    let hint = suggest(u, &known)
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    self.error(
                        sp,
                        format!("route upstream `{u}` is not declared in [[upstreams]]{hint}"),
                    );
                    ok = false;
                }
                Some(u.to_string())
            }
            None => {
                if t.upstream.is_some() {
                    ok = false;
                } else if matches!(action, Some(Action::Allow | Action::Approve)) {
                    self.error(span.clone(), "an allow or approve route needs `upstream`");
                    ok = false;
                }
                None
            }
        };
        let methods = match &t.methods {
            None => Some(MethodSet::Any),
            Some(_) => self
                .methods(&t.methods, "methods", sec)
                .map(MethodSet::Only),
        };
        let host = match self.string(&t.host, "host", sec) {
            None => {
                ok &= t.host.is_none();
                None
            }
            Some((h, sp)) => match parse_host_pattern(h) {
                Ok(h) => Some(h),
                Err(e) => {
                    self.error(sp, e);
                    ok = false;
                    None
                }
            },
        };
        let path = match self.string(&t.path, "path", sec) {
            None if t.path.is_some() => None,
            None => Some(PathPattern {
                source: "/**".to_string(),
                segments: Vec::new(),
                rest: true,
            }),
            Some((p, sp)) => match parse_path_pattern(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.error(sp, e);
                    None
                }
            },
        };
        let headers = match self.header_rules(&t.headers, sec) {
            Some(h) => h,
            None => {
                ok = false;
                Vec::new()
            }
        };
        if let Some(Field { value: Ok(s), span }) = &t.source {
            if s.is_empty() {
                self.error(span.clone(), format!("`source` in {sec} is empty, so nothing would match; leave it out to match any source"));
                ok = false;
            }
        }
        if let Some(Field { value: Ok(h), span }) = &t.headers {
            if h.is_empty() {
                self.error(span.clone(), format!("`headers` in {sec} is empty: it is no condition; remove it or name a header"));
                ok = false;
            }
        }
        let source = self.cidrs(&t.source, "source", sec);
        let flag = |cx: &mut Self, f: &Option<Field<bool>>, key: &str, default: bool| {
            cx.flag(f, key, sec).map_or(default, |b| b.0)
        };
        let case_insensitive = flag(self, &t.case_insensitive, "case_insensitive", false);
        let allow_encoded_slash = flag(self, &t.allow_encoded_slash, "allow_encoded_slash", false);
        let allow_path_params = flag(self, &t.allow_path_params, "allow_path_params", false);
        let enforce = flag(self, &t.enforce, "enforce", true);
        if !enforce && action == Some(Action::Allow) {
            if let Some(sp) = span_of(&t.enforce) {
                self.warn(sp, "`enforce = false` has no effect on an allow route");
            }
        }
        let error = match self.table(&t.error, "error", sec, "[routes.error]") {
            None => {
                ok &= t.error.is_none();
                None
            }
            Some((et, sp)) => {
                if action == Some(Action::Allow) {
                    self.warn(sp, "[routes.error] is never used by an allow route");
                }
                let e = self.error_template(et);
                ok &= e.is_some();
                e
            }
        };
        let approval = match (
            self.table(&t.approval, "approval", sec, "[routes.approval]"),
            action,
        ) {
            (Some((at, asp)), Some(Action::Approve)) => {
                let a = self.approval(at, asp, approvals);
                ok &= a.is_some();
                a
            }
            (Some((_, sp)), Some(a)) => {
                self.error(
                    sp,
                    format!(
                        "[routes.approval] is only for action = \"approve\", not \"{}\"",
                        a.as_str()
                    ),
                );
                ok = false;
                None
            }
            (None, Some(Action::Approve)) => {
                if t.approval.is_none() {
                    self.error(
                        span.clone(),
                        "an approve route needs [routes.approval] (at least `approvers`)",
                    );
                }
                ok = false;
                None
            }
            _ => None,
        };
        let location = self.loc(&span);
        if !ok {
            return None;
        }
        Some(Route {
            index,
            name: name?,
            action: action?,
            upstream,
            methods: methods?,
            host,
            path: path?,
            headers,
            source,
            case_insensitive,
            allow_encoded_slash,
            allow_path_params,
            enforce,
            error,
            approval,
            definition_hash: [0; 32],
            location,
        })
    }

    fn error_template(&mut self, t: &Table<RawError>) -> Option<ErrorTemplate> {
        let sec = "[routes.error]";
        let status = match self.integer(&t.status, "status", sec) {
            None if t.status.is_some() => return None,
            None => StatusCode::FORBIDDEN,
            Some((n, sp)) => match u16::try_from(n)
                .ok()
                .filter(|n| (400..=599).contains(n))
                .and_then(|n| StatusCode::from_u16(n).ok())
            {
                Some(s) => s,
                None => {
                    self.error(
                        sp,
                        format!("`status` in [routes.error] must be from 400 to 599, not {n}"),
                    );
                    return None;
                }
            },
        };
        let content_type = self.string(&t.content_type, "content_type", sec);
        if let Some((ct, sp)) = &content_type {
            if HeaderValue::from_str(ct).is_err() || !ct.contains('/') {
                self.error(
                    sp.clone(),
                    format!("`content_type` in [routes.error] is not a media type: `{ct}`"),
                );
                return None;
            }
        }
        match self.string(&t.body, "body", sec) {
            Some((body, sp)) => {
                let mut ok = true;
                for (_, name) in placeholders(body) {
                    if !ERROR_PLACEHOLDERS.contains(&name) {
                        let hint = suggest(name, &ERROR_PLACEHOLDERS)
                            .map(|s| format!("; did you mean `{{{s}}}`?"))
                            .unwrap_or_default();
                        self.error(sp.clone(), format!("unknown placeholder `{{{name}}}` in [routes.error] body; use {{ticket}}, {{reason}} or {{rule}}{hint}"));
                        ok = false;
                    }
                }
                let content_type = content_type
                    .map_or(DEFAULT_ERROR_CONTENT_TYPE.to_string(), |c| c.0.to_string());
                if placeholders(body).next().is_some()
                    && Escaping::for_content_type(&content_type).is_none()
                {
                    self.error(sp.clone(), format!("[routes.error] body uses placeholders, but jitgate cannot escape values for content type `{content_type}`; use text/plain, text/html, JSON or XML, or a body without placeholders"));
                    ok = false;
                }
                ok.then(|| ErrorTemplate {
                    status,
                    content_type,
                    body: body.to_string(),
                })
            }
            None if t.body.is_some() => None,
            None => {
                if let Some((_, sp)) = content_type {
                    self.error(sp, "`content_type` in [routes.error] needs a `body`");
                    return None;
                }
                Some(ErrorTemplate {
                    status,
                    content_type: PROBLEM_JSON.to_string(),
                    body: default_problem_body(status),
                })
            }
        }
    }

    /// A `headers = { name = "value" | "*" }` table of header conditions; `None` (errors
    /// reported) when any entry is invalid.
    pub(super) fn header_rules(
        &mut self,
        f: &Option<Field<Map<String>>>,
        sec: &str,
    ) -> Option<Vec<HeaderRule>> {
        let mut ok = true;
        let mut headers: Vec<HeaderRule> = Vec::new();
        if let Some((ht, _)) = self.get(f, "headers", sec) {
            for (k, v) in ht {
                let key: &str = k.get_ref();
                let Ok(name) = HeaderName::from_bytes(key.as_bytes()) else {
                    self.error(k.span(), format!("`{key}` is not a valid header name"));
                    ok = false;
                    continue;
                };
                let Ok(val) = &v.value else {
                    self.error(
                        v.span.clone(),
                        format!(
                            "header condition `{key}` must be a string (`\"*\"` means present)"
                        ),
                    );
                    ok = false;
                    continue;
                };
                if headers.iter().any(|h| h.name == name) {
                    self.error(
                        k.span(),
                        format!("header `{name}` is named twice (header names ignore case): both conditions would have to hold at once; keep one"),
                    );
                    ok = false;
                    continue;
                }
                if val != "*" && HeaderValue::from_str(val).is_err() {
                    self.error(
                        v.span.clone(),
                        format!("header condition `{key}` has a value no header can carry"),
                    );
                    ok = false;
                    continue;
                }
                headers.push(HeaderRule {
                    name,
                    value: (val != "*").then(|| val.to_string()),
                });
            }
        } else {
            ok &= f.is_none();
        }
        ok.then_some(headers)
    }
}

/// SHA-256 over a normalised rendering of everything that decides what a route matches and
/// does (not its position or location), so an approval lapses when its rule is edited.
fn definition_hash(r: &Route) -> [u8; 32] {
    // Who is told about a ticket is not what was approved: changing the channels must not
    // invalidate pending approvals.
    let approval = r.approval.clone().map(|mut a| {
        a.notify = None;
        a.chat_approval = true;
        a
    });
    let def = format!(
        "name={:?}\naction={}\nupstream={:?}\nmethods={:?}\nhost={:?}\npath={:?}\nheaders={:?}\nsource={:?}\nci={}\nslash={}\nparams={}\nenforce={}\nerror={:?}\napproval={:?}\n",
        r.name,
        r.action.as_str(),
        r.upstream,
        r.methods,
        r.host,
        r.path,
        r.headers,
        r.source,
        r.case_insensitive,
        r.allow_encoded_slash,
        r.allow_path_params,
        r.enforce,
        r.error,
        approval,
    );
    Sha256::digest(def.as_bytes()).into()
}
