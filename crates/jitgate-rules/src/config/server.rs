//! `[server]`, `[store]`, `[audit]` and `[log]`.

use std::net::SocketAddr;
use std::ops::Range;
use std::str::FromStr;

use serde::Deserialize;

use super::raw::{Field, Strings, Table};
use super::{
    secs, AccessLog, Audit, Cx, Log, Server, Store, TlsFiles, DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN,
};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawServer {
    listen: Option<Field<String>>,
    admin_listen: Option<Field<String>>,
    admin_allow_remote: Option<Field<bool>>,
    tls: Option<Field<Table<RawTls>>>,
    trusted_proxies: Option<Field<Strings>>,
    header_read_timeout: Option<Field<String>>,
    shutdown_grace: Option<Field<String>>,
    watch: Option<Field<bool>>,
    max_connections: Option<Field<i64>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawTls {
    cert: Option<Field<String>>,
    key: Option<Field<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawStore {
    kind: Option<Field<String>>,
    url: Option<Field<String>>,
    retention: Option<Field<String>>,
    ca_file: Option<Field<String>>,
    tls: Option<Field<Table<RawTls>>>,
    sentinel_username: Option<Field<String>>,
    sentinel_password: Option<Field<String>>,
    replica_acks: Option<Field<i64>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawAudit {
    file: Option<Field<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawLog {
    access: Option<Field<String>>,
}

impl Cx<'_> {
    pub(super) fn server(&mut self, t: &Table<RawServer>) -> Option<Server> {
        let sec = "[server]";
        let mut ok = true;
        let addr = |cx: &mut Self,
                    f: &Option<Field<String>>,
                    key: &str,
                    default: &str|
         -> Option<(SocketAddr, Option<Range<usize>>)> {
            match cx.string(f, key, sec) {
                None => SocketAddr::from_str(default).ok().map(|a| (a, None)),
                Some((s, span)) => match SocketAddr::from_str(s) {
                    Ok(a) => Some((a, Some(span))),
                    Err(_) => {
                        cx.error(span, format!("`{key}` in [server] must be IP:PORT (e.g. \"{default}\"), not `{s}`"));
                        None
                    }
                },
            }
        };
        let listen = addr(self, &t.listen, "listen", DEFAULT_LISTEN);
        let admin_listen = addr(self, &t.admin_listen, "admin_listen", DEFAULT_ADMIN_LISTEN);
        let admin_allow_remote = self
            .flag(&t.admin_allow_remote, "admin_allow_remote", sec)
            .is_some_and(|b| b.0);
        if let (Some((l, lspan)), Some((a, aspan))) = (&listen, &admin_listen) {
            // Where the clash is written: `admin_listen`, else `listen` against the default.
            let span = aspan.clone().or(lspan.clone()).unwrap_or(0..0);
            if l.port() == a.port()
                && l.port() != 0
                && (l.ip() == a.ip() || l.ip().is_unspecified() || a.ip().is_unspecified())
            {
                self.error(span.clone(), format!("`admin_listen` ({a}) must differ from `listen` ({l}): the admin plane never shares the data port"));
                ok = false;
            }
            if !a.ip().is_loopback() && !admin_allow_remote {
                self.error(span, format!("`admin_listen` ({a}) is not a loopback address; set `admin_allow_remote = true` to expose the admin plane"));
                ok = false;
            }
        }
        let tls = match self.tls_files(&t.tls, sec) {
            Ok(tls) => tls,
            Err(()) => {
                ok = false;
                None
            }
        };
        let trusted_proxies = self.cidrs(&t.trusted_proxies, "trusted_proxies", sec);
        let header_read_timeout = self
            .duration(&t.header_read_timeout, "header_read_timeout", sec)
            .map_or(secs(10), |d| d.0);
        let shutdown_grace = self
            .duration(&t.shutdown_grace, "shutdown_grace", sec)
            .map_or(secs(30), |d| d.0);
        let watch = self.flag(&t.watch, "watch", sec).is_none_or(|b| b.0);
        let max_connections = self
            .u32_(&t.max_connections, "max_connections", sec, 1)
            .map(|n| n.0 as usize);
        let (listen, admin_listen) = (listen?.0, admin_listen?.0);
        ok.then_some(Server {
            listen,
            admin_listen,
            admin_allow_remote,
            tls,
            trusted_proxies,
            header_read_timeout,
            shutdown_grace,
            watch,
            max_connections,
        })
    }

    /// A `tls = { cert, key }` table of `parent`: `Err` when it is given but unusable.
    fn tls_files(
        &mut self,
        f: &Option<Field<Table<RawTls>>>,
        parent: &str,
    ) -> Result<Option<TlsFiles>, ()> {
        let section = format!("{}.tls]", parent.trim_end_matches(']'));
        let Some((tt, span)) = self.table(f, "tls", parent, &section) else {
            return if f.is_some() { Err(()) } else { Ok(None) };
        };
        let cert = self.path_value(&tt.cert, "cert", &section);
        let key = self.path_value(&tt.key, "key", &section);
        if tt.cert.is_none() || tt.key.is_none() {
            self.error(
                span,
                format!("`tls` in {parent} needs both `cert` and `key`"),
            );
        }
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
            _ => Err(()),
        }
    }

    pub(super) fn store(&mut self, t: &Table<RawStore>) -> Option<Store> {
        let sec = "[store]";
        let kind = self.string(&t.kind, "kind", sec);
        let url = self.string(&t.url, "url", sec);
        let retention = self.duration(&t.retention, "retention", sec);
        let ca_file = self.path_value(&t.ca_file, "ca_file", sec);
        let client_tls = self.tls_files(&t.tls, sec);
        let sentinel_username = self.string(&t.sentinel_username, "sentinel_username", sec);
        let sentinel_password = self.string(&t.sentinel_password, "sentinel_password", sec);
        let replica_acks = self.u32_(&t.replica_acks, "replica_acks", sec, 0);
        match kind.as_ref().map(|k| k.0) {
            None | Some("memory") => {
                if let Some((_, span)) = url {
                    self.warn(span, "`url` in [store] is ignored with kind = \"memory\"");
                }
                for (key, f) in [
                    ("ca_file", t.ca_file.as_ref().map(|f| f.span.clone())),
                    ("tls", t.tls.as_ref().map(|f| f.span.clone())),
                    (
                        "sentinel_username",
                        t.sentinel_username.as_ref().map(|f| f.span.clone()),
                    ),
                    (
                        "sentinel_password",
                        t.sentinel_password.as_ref().map(|f| f.span.clone()),
                    ),
                    (
                        "replica_acks",
                        t.replica_acks.as_ref().map(|f| f.span.clone()),
                    ),
                ] {
                    if let Some(span) = f {
                        self.warn(
                            span,
                            format!("`{key}` in [store] is ignored with kind = \"memory\""),
                        );
                    }
                }
                Some(Store::Memory {
                    retention: retention.map_or(secs(86_400), |d| d.0),
                })
            }
            Some("redis") => {
                let Some((u, span)) = url else {
                    let span = kind.map_or(0..0, |k| k.1);
                    self.error(
                        span,
                        "[store] kind = \"redis\" needs `url` (redis:// or rediss://)",
                    );
                    return None;
                };
                const SCHEMES: [&str; 6] = [
                    "redis://",
                    "rediss://",
                    "redis+sentinel://",
                    "rediss+sentinel://",
                    "redis+cluster://",
                    "rediss+cluster://",
                ];
                if !SCHEMES.iter().any(|s| u.starts_with(s)) || SCHEMES.contains(&u) {
                    self.error(span, format!("`url` in [store] must be a redis:// or rediss:// URL (or +sentinel / +cluster), not `{}`", without_password(u)));
                    return None;
                }
                if u.contains('#') {
                    // The client reads `#insecure` as "do not verify the server certificate".
                    self.error(span, "`url` in [store] must not have a #fragment (`#insecure` would turn off certificate checks); give the CA with `ca_file`");
                    return None;
                }
                if let Some(Err(why)) = super::ClusterUrl::parse(u) {
                    self.error(span, format!("`url` in [store]: {why}"));
                    return None;
                }
                let sentinel = match super::SentinelUrl::parse(u) {
                    None => false,
                    Some(Ok(_)) => true,
                    Some(Err(why)) => {
                        self.error(span, format!("`url` in [store]: {why}"));
                        return None;
                    }
                };
                for (key, f) in [
                    ("sentinel_username", &sentinel_username),
                    ("sentinel_password", &sentinel_password),
                ] {
                    if let (Some((_, span)), false) = (f, sentinel) {
                        self.error(
                            span.clone(),
                            format!("`{key}` in [store] needs a redis+sentinel:// url"),
                        );
                        return None;
                    }
                }
                let tls = u.starts_with("rediss");
                for (key, f) in [
                    ("ca_file", t.ca_file.as_ref().map(|f| f.span.clone())),
                    ("tls", t.tls.as_ref().map(|f| f.span.clone())),
                ] {
                    if let (Some(span), false) = (f, tls) {
                        self.error(span, format!("`{key}` in [store] needs a TLS url (rediss://, rediss+sentinel://, rediss+cluster://); `{}` is plain text", without_password(u)));
                        return None;
                    }
                }
                let Ok(client_tls) = client_tls else {
                    return None;
                };
                if t.ca_file.is_some() && ca_file.is_none() {
                    return None;
                }
                Some(Store::Redis {
                    url: u.to_string(),
                    retention: retention.map_or(secs(86_400), |d| d.0),
                    ca_file,
                    client_tls,
                    sentinel_username: sentinel_username.map(|s| s.0.to_string()),
                    sentinel_password: sentinel_password.map(|s| s.0.to_string()),
                    replica_acks: replica_acks.map(|n| n.0),
                })
            }
            Some(other) => {
                let span = kind.map_or(0..0, |k| k.1);
                self.error(
                    span,
                    format!("`kind` in [store] must be \"memory\" or \"redis\", not `{other}`"),
                );
                None
            }
        }
    }

    pub(super) fn audit(&mut self, t: &Table<RawAudit>) -> Option<Audit> {
        let file = match &t.file {
            None => None,
            Some(_) => Some(self.path_value(&t.file, "file", "[audit]")?),
        };
        Some(Audit { file })
    }

    pub(super) fn log(&mut self, t: &Table<RawLog>) -> Option<Log> {
        let access = match self.string(&t.access, "access", "[log]") {
            None if t.access.is_some() => return None,
            None | Some(("text", _)) => AccessLog::Text,
            Some(("json", _)) => AccessLog::Json,
            Some(("off", _)) => AccessLog::Off,
            Some((other, span)) => {
                self.error(
                    span,
                    format!(
                        "`access` in [log] must be \"text\", \"json\" or \"off\", not `{other}`"
                    ),
                );
                return None;
            }
        };
        Some(Log { access })
    }
}

/// `url` for an error message (logs, audit): without its user info, which may hold a password.
fn without_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    match authority.rsplit_once('@') {
        Some((_, hosts)) => format!("{scheme}://…@{hosts}{}", &rest[authority.len()..]),
        None => url.to_string(),
    }
}
