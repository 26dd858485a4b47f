//! `[[upstreams]]`: where allowed and approved requests are forwarded.

use std::str::FromStr;

use http::Uri;
use serde::Deserialize;

use super::raw::{Field, Table};
use super::{is_name, secs, Cx, RawConfig, Upstream, UpstreamProtocol};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawUpstream {
    pub(super) name: Option<Field<String>>,
    url: Option<Field<String>>,
    protocol: Option<Field<String>>,
    ca_file: Option<Field<String>>,
    preserve_host: Option<Field<bool>>,
    connect_timeout: Option<Field<String>>,
    response_timeout: Option<Field<String>>,
    idle_timeout: Option<Field<String>>,
    pool_idle_timeout: Option<Field<String>>,
    pool_max_idle: Option<Field<i64>>,
}

impl Cx<'_> {
    pub(super) fn upstreams(&mut self, doc: &Table<RawConfig>) -> Vec<Upstream> {
        let mut out: Vec<Upstream> = Vec::new();
        for (t, span) in self.tables(&doc.upstreams, "upstreams", "the top level") {
            let sec = "[[upstreams]]";
            self.keys(t, sec);
            let name = match self.string(&t.name, "name", sec) {
                None => {
                    if t.name.is_none() {
                        self.error(span.clone(), "an upstream needs `name`");
                    }
                    None
                }
                Some((n, sp)) if !is_name(n) => {
                    self.error(
                        sp,
                        format!(
                            "upstream name `{n}` may only use letters, digits, `-`, `_` and `.`"
                        ),
                    );
                    None
                }
                Some((n, sp)) if out.iter().any(|u| u.name == n) => {
                    self.error(sp, format!("upstream name `{n}` is used twice"));
                    None
                }
                Some((n, _)) => Some(n.to_string()),
            };
            let url = match self.string(&t.url, "url", sec) {
                None => {
                    if t.url.is_none() {
                        self.error(span.clone(), "an upstream needs `url`");
                    }
                    None
                }
                Some((u, sp)) => match check_upstream_url(u) {
                    Ok(uri) => Some(uri),
                    Err(e) => {
                        self.error(sp, e);
                        None
                    }
                },
            };
            let protocol = match self.string(&t.protocol, "protocol", sec) {
                None => Some(UpstreamProtocol::Auto),
                Some(("auto", _)) => Some(UpstreamProtocol::Auto),
                Some(("http1", _)) => Some(UpstreamProtocol::Http1),
                Some(("h2", _)) => Some(UpstreamProtocol::H2),
                Some((p, sp)) => {
                    self.error(sp, format!("`protocol` in [[upstreams]] must be \"auto\", \"http1\" or \"h2\", not `{p}`"));
                    None
                }
            };
            let ca_file = self.path_value(&t.ca_file, "ca_file", sec);
            if let (Some(_), Some(u), Some(f)) = (&ca_file, &url, &t.ca_file) {
                if u.scheme_str() != Some("https") {
                    self.warn(
                        f.span.clone(),
                        "`ca_file` is only used with an https:// upstream",
                    );
                }
            }
            let preserve_host = self
                .flag(&t.preserve_host, "preserve_host", sec)
                .is_none_or(|b| b.0);
            let dur = |cx: &mut Self, f: &Option<Field<String>>, key: &str, default: u64| {
                cx.duration(f, key, sec).map_or(secs(default), |d| d.0)
            };
            let connect_timeout = dur(self, &t.connect_timeout, "connect_timeout", 5);
            let response_timeout = dur(self, &t.response_timeout, "response_timeout", 60);
            let idle_timeout = dur(self, &t.idle_timeout, "idle_timeout", 60);
            let pool_idle_timeout = dur(self, &t.pool_idle_timeout, "pool_idle_timeout", 90);
            let pool_max_idle = self
                .u32_(&t.pool_max_idle, "pool_max_idle", sec, 0)
                .map_or(256, |n| n.0 as usize);
            if let (Some(name), Some(url), Some(protocol)) = (name, url, protocol) {
                out.push(Upstream {
                    name,
                    url,
                    protocol,
                    ca_file,
                    preserve_host,
                    connect_timeout,
                    response_timeout,
                    idle_timeout,
                    pool_idle_timeout,
                    pool_max_idle,
                });
            } else if let Some(Ok(n)) = t.name.as_ref().map(|f| &f.value) {
                // Keep the name known so routes naming it are not reported as well.
                self.broken_upstreams.push(n.clone());
            }
        }
        out
    }
}

fn check_upstream_url(u: &str) -> Result<Uri, String> {
    let bad = |why: &str| format!("upstream `url` `{u}` {why}");
    let uri = Uri::from_str(u).map_err(|_| bad("is not a valid URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(bad("must start with http:// or https://")),
    }
    let auth = uri.authority().ok_or_else(|| bad("has no host"))?;
    if auth.as_str().contains('@') {
        return Err(bad(
            "must not contain user info; credentials do not belong in the config",
        ));
    }
    if auth.host().is_empty() {
        return Err(bad("has no host"));
    }
    if let Some(pq) = uri.path_and_query() {
        if pq.query().is_some() {
            return Err(bad("must not have a query"));
        }
        if !matches!(pq.path(), "" | "/") {
            return Err(bad(
                "must not have a path; requests are forwarded with their own path",
            ));
        }
    }
    Ok(uri)
}
