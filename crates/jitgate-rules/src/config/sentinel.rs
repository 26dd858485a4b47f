//! `redis+sentinel://` and `redis+cluster://` store URLs: read once here, by `check` and by
//! the store alike.

use percent_encoding::percent_decode_str;

/// `redis+sentinel://[user:pass@]host:port[,host:port...]/MASTER_NAME[/DB]`, or
/// `rediss+sentinel://` for TLS to the sentinels and the data nodes alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// `rediss+sentinel://`.
    pub tls: bool,
    /// The sentinels, in the order given (port 26379 when none is given).
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the primary under.
    pub master: String,
    /// The database on the data nodes (0 when none is given).
    pub db: i64,
    /// Credentials for the data nodes (percent-decoded), from the URL's user info.
    pub username: Option<String>,
    /// As `username`.
    pub password: Option<String>,
}

/// The port sentinels listen on by default.
pub const SENTINEL_PORT: u16 = 26379;

impl SentinelUrl {
    /// Reads `url`; `None` when it is not a sentinel URL at all, `Some(Err(why))` when it is
    /// one but malformed.
    pub fn parse(url: &str) -> Option<Result<SentinelUrl, String>> {
        let (tls, rest) = scheme(url, "sentinel")?;
        Some(Self::parse_rest(tls, rest))
    }

    fn parse_rest(tls: bool, rest: &str) -> Result<SentinelUrl, String> {
        let (authority, path) = rest.split_once('/').ok_or(
            "a sentinel URL needs the primary's name after the hosts: redis+sentinel://host:port/MASTER_NAME",
        )?;
        let (username, password, hosts) = user_info(authority)?;
        let mut sentinels = Vec::new();
        for h in hosts.split(',') {
            sentinels.push(host_port(h, "sentinel", SENTINEL_PORT)?);
        }
        let mut segments = path.split('/');
        let master = segments.next().unwrap_or_default();
        if master.is_empty() {
            return Err(
                "a sentinel URL needs the primary's name: redis+sentinel://host:port/MASTER_NAME"
                    .into(),
            );
        }
        let master = percent_decode_str(master)
            .decode_utf8()
            .map_err(|_| "the primary's name is not UTF-8 once percent-decoded".to_string())?
            .into_owned();
        let db = match segments.next() {
            None | Some("") => 0,
            Some(d) => d
                .parse::<i64>()
                .ok()
                .filter(|d| *d >= 0)
                .ok_or_else(|| format!("the database `{d}` is not a number"))?,
        };
        if segments.any(|s| !s.is_empty()) || path.contains(['?', '#']) {
            return Err(
                "a sentinel URL ends after the database: redis+sentinel://host:port/MASTER_NAME/DB"
                    .into(),
            );
        }
        Ok(SentinelUrl {
            tls,
            sentinels,
            master,
            db,
            username,
            password,
        })
    }
}

/// After `redis+<kind>://` (`false`) or `rediss+<kind>://` (TLS, `true`): whether TLS and
/// the rest; `None` for another scheme.
fn scheme<'a>(url: &'a str, kind: &str) -> Option<(bool, &'a str)> {
    let (tls, rest) = match url.strip_prefix("rediss+") {
        Some(rest) => (true, rest),
        None => (false, url.strip_prefix("redis+")?),
    };
    Some((tls, rest.strip_prefix(kind)?.strip_prefix("://")?))
}

/// The percent-decoded user and password of `authority` (`[user[:pass]@]hosts`), and the hosts.
type UserInfo<'a> = (Option<String>, Option<String>, &'a str);
fn user_info(authority: &str) -> Result<UserInfo<'_>, String> {
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let Some(u) = userinfo else {
        return Ok((None, None, hosts));
    };
    let (user, pass) = match u.split_once(':') {
        Some((user, pass)) => (user, Some(pass)),
        None => (u, None),
    };
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| "the user info is not UTF-8 once percent-decoded".to_string())
    };
    let user = (!user.is_empty()).then(|| decode(user)).transpose()?;
    let pass = pass.map(decode).transpose()?;
    Ok((user, pass, hosts))
}

/// `redis+cluster://[user:pass@]host:port[,host:port...]`, or `rediss+cluster://` for TLS:
/// seed nodes of a Redis Cluster (the client learns the rest from them). Cluster has one
/// database, so there is no `/DB`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    /// `rediss+cluster://`.
    pub tls: bool,
    /// The seed nodes, in the order given (port 6379 when none is given).
    pub nodes: Vec<(String, u16)>,
    /// Credentials for every node (percent-decoded), from the URL's user info.
    pub username: Option<String>,
    /// As `username`.
    pub password: Option<String>,
}

impl ClusterUrl {
    /// Reads `url`; `None` when it is not a cluster URL at all, `Some(Err(why))` when it is
    /// one but malformed.
    pub fn parse(url: &str) -> Option<Result<ClusterUrl, String>> {
        let (tls, rest) = scheme(url, "cluster")?;
        Some(Self::parse_rest(tls, rest))
    }

    fn parse_rest(tls: bool, rest: &str) -> Result<ClusterUrl, String> {
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (rest, None),
        };
        if path.is_some_and(|p| !p.is_empty()) || authority.contains(['?', '#']) {
            return Err(
                "a cluster URL is only seed nodes (Redis Cluster has one database): redis+cluster://host:port,host:port"
                    .into(),
            );
        }
        let (username, password, hosts) = user_info(authority)?;
        let mut nodes = Vec::new();
        for h in hosts.split(',') {
            nodes.push(host_port(h, "cluster node", 6379)?);
        }
        Ok(ClusterUrl {
            tls,
            nodes,
            username,
            password,
        })
    }

    /// One `redis://` (or `rediss://`) URL per seed node, with the credentials.
    pub fn node_urls(&self) -> Vec<String> {
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let auth = match (&self.username, &self.password) {
            (None, None) => String::new(),
            (u, None) => format!("{}@", enc(u.as_deref().unwrap_or_default())),
            (u, Some(p)) => format!("{}:{}@", enc(u.as_deref().unwrap_or_default()), enc(p)),
        };
        let scheme = if self.tls { "rediss" } else { "redis" };
        self.nodes
            .iter()
            .map(|(host, port)| {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                format!("{scheme}://{auth}{host}:{port}")
            })
            .collect()
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` of a `what` (`sentinel`, `cluster node`), with
/// `default` when no port is given.
fn host_port(h: &str, what: &str, default: u16) -> Result<(String, u16), String> {
    let bad = || format!("`{h}` is not a {what} address (host:port)");
    let (host, port) = if let Some(v6) = h.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match h.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        }
    };
    if host.is_empty() || host.contains(['@', ' ', '[', ']']) {
        return Err(bad());
    }
    let port = match port {
        None => default,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
    };
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hosts_name_db_and_credentials() {
        let u = SentinelUrl::parse("redis+sentinel://app:p%40ss@s1:26379,s2,[::1]:5000/mymaster/3")
            .expect("a sentinel url")
            .expect("valid");
        assert!(!u.tls);
        assert_eq!(
            u.sentinels,
            [
                ("s1".to_string(), 26379),
                ("s2".to_string(), SENTINEL_PORT),
                ("::1".to_string(), 5000)
            ]
        );
        assert_eq!(u.master, "mymaster");
        assert_eq!(u.db, 3);
        assert_eq!(u.username.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));

        let u = SentinelUrl::parse("rediss+sentinel://:secret@s1:26379/m")
            .expect("a sentinel url")
            .expect("valid");
        assert!(u.tls);
        assert_eq!(
            (u.username, u.password.as_deref(), u.db),
            (None, Some("secret"), 0)
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(SentinelUrl::parse("redis://h:6379/0").is_none());
        for bad in [
            "redis+sentinel://s1:26379",
            "redis+sentinel://s1:26379/",
            "redis+sentinel://s1:26379,/m",
            "redis+sentinel://s1:0/m",
            "redis+sentinel://s1:x/m",
            "redis+sentinel://[::1/m",
            "redis+sentinel://s1/m/x",
            "redis+sentinel://s1/m/-1",
            "redis+sentinel://s1/m/0/extra",
            "redis+sentinel://s1/m?x=1",
        ] {
            assert!(
                matches!(SentinelUrl::parse(bad), Some(Err(_))),
                "accepted {bad}"
            );
        }
    }

    #[test]
    fn reads_cluster_seed_nodes_and_credentials() {
        let u = ClusterUrl::parse("rediss+cluster://app:p%40ss@n1:7000,n2,[::1]:7002")
            .expect("a cluster url")
            .expect("valid");
        assert!(u.tls);
        assert_eq!(
            u.nodes,
            [
                ("n1".to_string(), 7000),
                ("n2".to_string(), 6379),
                ("::1".to_string(), 7002)
            ]
        );
        assert_eq!(u.username.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(
            u.node_urls(),
            [
                "rediss://app:p%40ss@n1:7000",
                "rediss://app:p%40ss@n2:6379",
                "rediss://app:p%40ss@[::1]:7002"
            ]
        );
        let plain = ClusterUrl::parse("redis+cluster://n1:7000/")
            .expect("cluster")
            .expect("valid");
        assert!(!plain.tls);
        assert_eq!(plain.node_urls(), ["redis://n1:7000"]);
        assert!(ClusterUrl::parse("redis://n1:7000").is_none());
    }

    #[test]
    fn refuses_cluster_urls_it_cannot_read() {
        for bad in [
            "redis+cluster://n1:7000/0",
            "redis+cluster://n1:7000/?x=1",
            "redis+cluster://n1:7000?x=1",
            "redis+cluster://",
            "redis+cluster://n1:0",
            "redis+cluster://n1:7000,,n2",
            "redis+cluster://n1:seven",
        ] {
            assert!(
                matches!(ClusterUrl::parse(bad), Some(Err(_))),
                "{bad} should be refused"
            );
        }
    }
}
