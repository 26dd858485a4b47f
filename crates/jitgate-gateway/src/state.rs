//! The live rule table and everything derived from it, swapped whole on reload.
//!
//! A request loads the snapshot once (`ArcSwap::load_full`) and keeps it to the end, so a
//! reload never changes the rules under a request in flight. Reload builds and validates
//! the whole new snapshot off the hot path; an invalid file changes nothing.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde_json::{json, Value};

use jitgate_rules::config::Config;
use jitgate_rules::ticket::{sha256_hex, AuditDraft, AuditKind};
use jitgate_rules::{Diagnostic, RuleTable};
use rustls::sign::CertifiedKey;

use jitgate_identity::{AdminAuthenticator, Authenticator};

use crate::contract::{ReloadAttempt, RouteInfo, Rules, UpstreamInfo};
use crate::engine::Engine;
use crate::rules_file::{self, WriteError};
use crate::tls::{load_certified_key, CertSlot};
use crate::upstream::UpstreamClient;

/// One immutable generation of the rule table.
pub struct Snapshot {
    /// The validated table.
    pub table: RuleTable,
    /// Upstream client of each route, by route index (`None` for deny routes without one).
    pub route_upstreams: Vec<Option<Arc<UpstreamClient>>>,
    /// Upstream clients by name.
    pub upstreams: HashMap<String, Arc<UpstreamClient>>,
    /// When this generation was swapped in.
    pub loaded_at: SystemTime,
    /// Requester authentication (`[identity]`).
    pub auth: Authenticator,
    /// Approver and operator authentication (`[admin]`).
    pub admin_auth: AdminAuthenticator,
    /// `[[notify]]` channels with their secrets.
    pub notify: Arc<crate::notify::Channels>,
    /// Each route's metric series, by route index, resolved on its first request.
    pub route_meters: Vec<std::sync::OnceLock<crate::metrics::RouteMeter>>,
    /// Each route's `approve_above_rate` limiter, by route index (kept across reloads for a
    /// route that did not change).
    pub route_rates: Vec<Option<Arc<crate::rate::RouteRate>>>,
    /// `[approvals.risk] rate_above`, counted per replica (kept across reloads while the rate
    /// is the same).
    pub risk_rate: Option<Arc<crate::rate::RiskRate>>,
}

impl Snapshot {
    /// The upstream client of route `index` (`None` for a deny route without one).
    pub fn upstream_of(&self, index: usize) -> Option<&Arc<UpstreamClient>> {
        self.route_upstreams.get(index).and_then(Option::as_ref)
    }

    /// The route in force that grant `g` was given on: same name and same definition. `None`
    /// when the route is gone or changed since (the grant has lapsed: it lets nothing
    /// through, and a route that took the name over has nothing to do with it).
    pub fn route_of_grant(
        &self,
        g: &jitgate_rules::ticket::Grant,
    ) -> Option<&jitgate_rules::route::Route> {
        self.table.routes().iter().find(|r| {
            r.name == g.route && jitgate_rules::ticket::hex(&r.definition_hash) == g.route_hash
        })
    }

    /// How long a request body on route `index` may stall while the gateway reads it whole:
    /// its upstream's `idle_timeout` (30 s for a route without an upstream).
    pub fn body_idle(&self, index: usize) -> std::time::Duration {
        self.upstream_of(index)
            .map_or(std::time::Duration::from_secs(30), |u| u.def.idle_timeout)
    }
}

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The file changed on disk.
    Watch,
    /// SIGHUP.
    Signal,
    /// `POST /v1/admin/reload`.
    Admin,
    /// `PUT /v1/admin/rules/source`.
    Put,
}

impl Trigger {
    /// How logs, `GET /v1/admin/rules` and the audit name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Watch => "watch",
            Trigger::Signal => "signal",
            Trigger::Admin => "admin",
            Trigger::Put => "put",
        }
    }
}

/// A reload that was applied, or found nothing to do.
#[derive(Debug, Clone)]
pub struct Applied {
    /// SHA-256 of the file now in force.
    pub version: String,
    /// Whether a new table was swapped in.
    pub changed: bool,
    /// Warnings about the new table, and settings that need a restart.
    pub warnings: Vec<String>,
}

/// A reload that was refused; the running table is unchanged.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Every error, as `file:line:column: error: message`.
    pub errors: Vec<String>,
}

/// Why `PUT /v1/admin/rules/source` changed nothing (neither the file nor the table in force).
#[derive(Debug, Clone)]
pub enum SourceRefused {
    /// `If-Match` does not name the version in force.
    Stale {
        /// The version in force.
        current: String,
    },
    /// The file on disk is not the table in force (an edit not applied yet, or rejected):
    /// replacing it would lose that edit.
    DiskChanged {
        /// The version in force.
        current: String,
        /// SHA-256 of the file on disk.
        on_disk: String,
    },
    /// The file must not or cannot be replaced (a symbolic link, read-only, missing).
    NotWritable(String),
    /// The new table is invalid.
    Invalid(Rejected),
    /// Reading or writing the file failed otherwise.
    Io(String),
}

/// A validated snapshot, ready to swap in.
struct Built {
    snapshot: Snapshot,
    cert: Option<CertifiedKey>,
    version: String,
}

#[derive(Debug, Clone)]
struct Attempt {
    at: SystemTime,
    trigger: Trigger,
    version: Option<String>,
    /// The file itself was invalid (as opposed to a file it names, or an upstream).
    invalid: bool,
    errors: Vec<String>,
}

/// State shared by every connection, the admin plane and the reload triggers.
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    engine: Arc<Engine>,
    /// Events for `GET /v1/events` streams.
    pub hub: crate::events::Hub,
    config_path: PathBuf,
    cert: Option<Arc<CertSlot>>,
    /// Reloads run one at a time.
    reload_lock: tokio::sync::Mutex<()>,
    last_attempt: Mutex<Option<Attempt>>,
    last_error: Mutex<Option<Attempt>>,
    /// The web page's signed-in sessions (this replica's memory).
    ui_sessions: crate::ui::Sessions,
    /// `[log] access` lines, buffered.
    access_log: crate::access_log::Writer,
}

/// Reads and validates a config file; every failure is reported as diagnostics.
pub fn load_table(path: &Path) -> Result<RuleTable, Vec<String>> {
    let bytes = std::fs::read(path)
        .map_err(|e| vec![format!("{}: error: cannot read: {e}", path.display())])?;
    parse_table(bytes, path)
}

/// Parses and validates a config file's bytes; every failure is reported as diagnostics.
pub fn parse_table(bytes: Vec<u8>, path: &Path) -> Result<RuleTable, Vec<String>> {
    let src = String::from_utf8(bytes)
        .map_err(|e| vec![format!("{}: error: not UTF-8: {e}", path.display())])?;
    let table = RuleTable::parse(&src, path).map_err(|diags| render(&diags))?;
    // What the store client itself refuses (a port out of range, a database that is not a
    // number, an unknown option) is refused here too, so `check` and a reload never accept
    // a file the next start would refuse.
    crate::engine::check_store_url(table.config())
        .map_err(|why| vec![format!("{}: error: [store] url: {why}", path.display())])?;
    Ok(table)
}

fn render(diags: &[Diagnostic]) -> Vec<String> {
    diags.iter().map(ToString::to_string).collect()
}

/// Builds a snapshot, reusing pooled clients of upstreams whose definition is unchanged.
pub fn build_snapshot(
    table: RuleTable,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, Vec<String>> {
    let mut upstreams = HashMap::new();
    let mut errors = Vec::new();
    for def in &table.config().upstreams {
        let reused = previous
            .and_then(|p| p.upstreams.get(&def.name))
            .filter(|c| c.def == *def)
            .cloned();
        match reused.map_or_else(|| UpstreamClient::build(def), Ok) {
            Ok(client) => {
                upstreams.insert(def.name.clone(), client);
            }
            Err(e) => errors.push(format!("upstream {}: {e}", def.name)),
        }
    }
    let cfg = table.config();
    let auth = Authenticator::from_config(&cfg.identity, &cfg.server.trusted_proxies)
        .map_err(|e| errors.push(format!("[identity]: {e}")));
    let admin_auth = AdminAuthenticator::from_config(&cfg.admin, cfg.identity.jwt.as_ref())
        .map_err(|e| errors.push(format!("[admin]: {e}")));
    let notify = crate::notify::Channels::build(cfg).map_err(|e| errors.extend(e));
    let (Ok(auth), Ok(admin_auth), Ok(notify), true) =
        (auth, admin_auth, notify, errors.is_empty())
    else {
        return Err(errors);
    };
    let route_upstreams = table
        .routes()
        .iter()
        .map(|r| r.upstream.as_ref().and_then(|n| upstreams.get(n).cloned()))
        .collect();
    let route_meters = table.routes().iter().map(|_| Default::default()).collect();
    let route_rates = table
        .routes()
        .iter()
        .map(|r| {
            let before =
                previous.and_then(|p| p.route_rates.get(p.table.route(&r.name)?.index)?.as_ref());
            crate::rate::RouteRate::for_route(r, before)
        })
        .collect();
    let risk_rate = cfg
        .approvals
        .risk
        .as_ref()
        .and_then(|r| r.rate_above)
        .and_then(|rate| {
            let same = previous.filter(|p| {
                p.table
                    .config()
                    .approvals
                    .risk
                    .as_ref()
                    .and_then(|r| r.rate_above)
                    == Some(rate)
            });
            match same.and_then(|p| p.risk_rate.clone()) {
                Some(kept) => Some(kept),
                None => crate::rate::RiskRate::new(rate).map(Arc::new),
            }
        });
    Ok(Snapshot {
        route_meters,
        route_rates,
        risk_rate,
        table,
        route_upstreams,
        upstreams,
        loaded_at: SystemTime::now(),
        auth,
        admin_auth,
        notify: Arc::new(notify),
    })
}

impl Shared {
    /// State for a freshly loaded snapshot.
    pub fn new(
        snapshot: Snapshot,
        engine: Arc<Engine>,
        config_path: PathBuf,
        cert: Option<Arc<CertSlot>>,
    ) -> Shared {
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            engine,
            hub: crate::events::Hub::default(),
            config_path,
            cert,
            reload_lock: tokio::sync::Mutex::new(()),
            last_attempt: Mutex::new(None),
            last_error: Mutex::new(None),
            ui_sessions: crate::ui::Sessions::new(),
            access_log: crate::access_log::Writer::default(),
        }
    }

    /// The generation in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The `[log] access` writer.
    pub fn access_log(&self) -> &crate::access_log::Writer {
        &self.access_log
    }

    /// The approval engine (store, signer, held requests).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The web page's sessions.
    pub fn ui_sessions(&self) -> &crate::ui::Sessions {
        &self.ui_sessions
    }

    /// The config file being served.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Re-reads the file and swaps in the new table if it is valid and different. `actor` is
    /// the authenticated admin caller for API triggers (`None` for watch and signal); a change
    /// applied or refused is audited as `rules.reloaded` / `rules.rejected` by them.
    ///
    /// Parsing, certificate loading and building upstream clients (which reads the system
    /// trust store) run on the blocking pool, off the runtime's workers. An explicit reload
    /// (SIGHUP, admin API) of an unchanged file still re-reads the TLS certificate, so a
    /// rotated certificate can be picked up alone. A watch-triggered reload of a file identical
    /// to the last *invalid* one is skipped quietly (editors save neighbours often); failures
    /// that depend on other files (a certificate written after the config) are retried.
    pub async fn reload(&self, trigger: Trigger, actor: Option<&str>) -> Result<Applied, Rejected> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let current = self.snapshot();
        let path = self.config_path.clone();
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => {
                let errors = vec![format!("{}: error: cannot read: {e}", path.display())];
                return Err(self.reject(trigger, actor, None, false, errors).await);
            }
        };
        let version = sha256_hex(&bytes);
        if version == current.table.version() {
            if trigger != Trigger::Watch {
                self.rotate_certificate(&current, trigger, actor, &version)
                    .await?;
            }
            return Ok(Applied {
                version,
                changed: false,
                warnings: Vec::new(),
            });
        }
        if trigger == Trigger::Watch && self.last_invalid_version().as_deref() == Some(&version) {
            return Err(Rejected {
                errors: self.last_errors(),
            });
        }
        match self.build(bytes, version.clone(), &current, false).await {
            Ok(built) => Ok(self.install(built, &current, trigger, actor).await),
            Err((invalid, errors)) => Err(self
                .reject(trigger, actor, Some(version), invalid, errors)
                .await),
        }
    }

    /// `PUT /v1/admin/rules/source`: replaces the config file with `source` and swaps in its
    /// table, if `if_match` names the version in force (the caller edited what is in force),
    /// the file on disk still holds that version (no edit made there is lost), the file may be
    /// replaced, and `source` passes exactly the validation a reload does. Otherwise nothing
    /// changes, on disk or in force.
    ///
    /// Runs under the reload lock, so concurrent PUTs and reloads are serialised and two PUTs
    /// naming the same version cannot both win. The file watcher sees the write and finds the
    /// version it reads already in force: no second reload, no second audit event.
    pub async fn replace_source(
        &self,
        if_match: &[String],
        source: Vec<u8>,
        actor: &str,
    ) -> Result<Applied, SourceRefused> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let (trigger, actor) = (Trigger::Put, Some(actor));
        let current = self.snapshot();
        let in_force = current.table.version().to_string();
        if !if_match.contains(&in_force) {
            return Err(SourceRefused::Stale { current: in_force });
        }
        let version = sha256_hex(&source);
        let path = self.config_path.clone();
        let (check_path, write_path) = (path.clone(), path.clone());
        let on_disk =
            tokio::task::spawn_blocking(move || rules_file::read_replaceable(&check_path))
                .await
                .unwrap_or_else(|e| Err(WriteError::Io(format!("file check failed: {e}"))));
        let refused = match on_disk {
            Ok(bytes) => {
                let on_disk = sha256_hex(&bytes);
                (on_disk != in_force).then(|| SourceRefused::DiskChanged {
                    current: in_force.clone(),
                    on_disk,
                })
            }
            Err(WriteError::NotWritable(m)) => Some(SourceRefused::NotWritable(m)),
            Err(WriteError::Io(m)) => Some(SourceRefused::Io(m)),
        };
        if let Some(refused) = refused {
            let why = refused_message(&path, &refused);
            self.reject(trigger, actor, Some(version), false, vec![why])
                .await;
            return Err(refused);
        }
        if version == in_force {
            return Ok(Applied {
                version,
                changed: false,
                warnings: Vec::new(),
            });
        }
        let built = match self
            .build(source.clone(), version.clone(), &current, true)
            .await
        {
            Ok(b) => b,
            Err((invalid, errors)) => {
                let rejected = self
                    .reject(trigger, actor, Some(version), invalid, errors)
                    .await;
                return Err(SourceRefused::Invalid(rejected));
            }
        };
        let written =
            tokio::task::spawn_blocking(move || rules_file::replace(&write_path, &source))
                .await
                .unwrap_or_else(|e| Err(WriteError::Io(format!("file write failed: {e}"))));
        if let Err(e) = written {
            let refused = match e {
                WriteError::NotWritable(m) => SourceRefused::NotWritable(m),
                WriteError::Io(m) => SourceRefused::Io(m),
            };
            let why = refused_message(&path, &refused);
            self.reject(trigger, actor, Some(version), false, vec![why])
                .await;
            return Err(refused);
        }
        tracing::info!(by = actor, file = %path.display(), %version, "config file replaced through the admin API");
        Ok(self.install(built, &current, trigger, actor).await)
    }

    /// Parses, validates and builds the snapshot of `bytes` exactly as every reload does
    /// (relative paths against the config file's folder, the TLS certificate loaded when the
    /// gateway serves TLS, upstream clients, identity keys); `Err` says whether the file itself
    /// was invalid, with every error.
    ///
    /// With `known_files_only` (a table sent through the API), a table naming a file the table
    /// in force does not name is invalid, before any file is read: the rules API edits rules,
    /// it does not point the gateway at other files on its host (which would let an operator
    /// probe for files, or have the gateway read or write them). New files are named by editing
    /// the file on the host, where they have to be put anyway.
    async fn build(
        &self,
        bytes: Vec<u8>,
        version: String,
        current: &Arc<Snapshot>,
        known_files_only: bool,
    ) -> Result<Built, (bool, Vec<String>)> {
        let path = self.config_path.clone();
        let wants_cert = self.cert.is_some();
        let previous = current.clone();
        tokio::task::spawn_blocking(move || {
            let table = parse_table(bytes, &path).map_err(|e| (true, e))?;
            if known_files_only {
                let known: HashSet<&Path> = previous
                    .table
                    .config()
                    .files
                    .iter()
                    .map(|f| f.path.as_path())
                    .collect();
                let unknown: Vec<String> = table
                    .config()
                    .files
                    .iter()
                    .filter(|f| !known.contains(f.path.as_path()))
                    .map(|f| {
                        format!(
                            "{}: error: `{}` is not named by the table in force; the rules API \
                             does not point the gateway at other files: name it by editing {} \
                             on the host",
                            f.location,
                            f.path.display(),
                            path.display()
                        )
                    })
                    .collect();
                // Not `invalid`: the same text is fine from the file on disk, so a watch
                // reload of it must not be skipped as a known-bad version.
                if !unknown.is_empty() {
                    return Err((false, unknown));
                }
            }
            let cert = match (&table.config().server.tls, wants_cert) {
                (Some(files), true) => Some(
                    load_certified_key(files)
                        .map_err(|e| (false, vec![format!("{}: error: {e}", path.display())]))?,
                ),
                _ => None,
            };
            let snapshot = build_snapshot(table, Some(&previous)).map_err(|e| (false, e))?;
            Ok(Built {
                snapshot,
                cert,
                version,
            })
        })
        .await
        .unwrap_or_else(|e| Err((false, vec![format!("reload task failed: {e}")])))
    }

    /// Swaps `built` in and audits it as `rules.reloaded`.
    async fn install(
        &self,
        built: Built,
        current: &Snapshot,
        trigger: Trigger,
        actor: Option<&str>,
    ) -> Applied {
        let Built {
            snapshot,
            cert,
            version,
        } = built;
        let mut warnings = render(snapshot.table.warnings());
        warnings.extend(restart_notices(
            current.table.config(),
            snapshot.table.config(),
        ));
        if let (Some(slot), Some(key)) = (&self.cert, cert) {
            slot.store(key);
        }
        self.snapshot.store(Arc::new(snapshot));
        for w in &warnings {
            tracing::warn!("{w}");
        }
        tracing::info!(trigger = trigger.as_str(), by = actor, %version, "rule table reloaded");
        self.set_attempt(Attempt {
            at: SystemTime::now(),
            trigger,
            version: Some(version.clone()),
            invalid: false,
            errors: Vec::new(),
        });
        let detail = json!({
            "trigger": trigger.as_str(),
            "previousVersion": current.table.version(),
            "version": version,
            "warnings": warnings.len(),
        });
        self.engine.metrics().reload("applied");
        self.audit(AuditKind::RulesReloaded, actor, detail).await;
        Applied {
            version,
            changed: true,
            warnings,
        }
    }

    async fn rotate_certificate(
        &self,
        current: &Snapshot,
        trigger: Trigger,
        actor: Option<&str>,
        version: &str,
    ) -> Result<(), Rejected> {
        let (Some(slot), Some(files)) = (&self.cert, current.table.config().server.tls.clone())
        else {
            return Ok(());
        };
        let path = self.config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || load_certified_key(&files))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match loaded {
            Ok(key) => {
                slot.store(key);
                Ok(())
            }
            Err(e) => {
                let errors = vec![format!("{}: error: {e}", path.display())];
                Err(self
                    .reject(trigger, actor, Some(version.to_string()), false, errors)
                    .await)
            }
        }
    }

    /// Records a refused reload (logs, `lastReloadError`) and audits it as `rules.rejected`.
    async fn reject(
        &self,
        trigger: Trigger,
        actor: Option<&str>,
        version: Option<String>,
        invalid: bool,
        errors: Vec<String>,
    ) -> Rejected {
        let detail = json!({
            "trigger": trigger.as_str(),
            "version": version,
            "errorCount": errors.len(),
            "errors": errors.iter().take(MAX_AUDITED_ERRORS).collect::<Vec<_>>(),
        });
        let rejected = self.record_failure(trigger, version, invalid, errors);
        self.engine.metrics().reload("rejected");
        self.audit(AuditKind::RulesRejected, actor, detail).await;
        rejected
    }

    /// Audits a rule-table event. The change it records has already applied (or been
    /// refused) whatever the store says: see [`Engine::append_reliably`].
    async fn audit(&self, kind: AuditKind, actor: Option<&str>, detail: Value) {
        let draft = AuditDraft {
            route: None,
            at: self.engine.now(),
            kind,
            ticket: None,
            actor: actor.map(str::to_string),
            requester: None,
            detail,
        };
        self.engine.append_reliably(draft).await;
    }

    fn record_failure(
        &self,
        trigger: Trigger,
        version: Option<String>,
        invalid: bool,
        errors: Vec<String>,
    ) -> Rejected {
        for e in &errors {
            tracing::error!(trigger = trigger.as_str(), "reload rejected: {e}");
        }
        let attempt = Attempt {
            at: SystemTime::now(),
            trigger,
            version,
            invalid,
            errors: errors.clone(),
        };
        self.set_attempt(attempt.clone());
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(attempt);
        }
        Rejected { errors }
    }

    fn set_attempt(&self, attempt: Attempt) {
        if let Ok(mut last) = self.last_attempt.lock() {
            *last = Some(attempt);
        }
    }

    fn last_invalid_version(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|l| {
            l.as_ref()
                .filter(|a| a.invalid)
                .and_then(|a| a.version.clone())
        })
    }

    fn last_errors(&self) -> Vec<String> {
        self.last_error
            .lock()
            .ok()
            .and_then(|l| l.as_ref().map(|a| a.errors.clone()))
            .unwrap_or_default()
    }

    /// `GET /v1/admin/rules`.
    pub fn rules(&self) -> Rules {
        let snap = self.snapshot();
        let table = &snap.table;
        let routes = table
            .routes()
            .iter()
            .map(|r| RouteInfo {
                index: r.index,
                name: r.name.clone(),
                action: r.action.as_str().to_string(),
                methods: match &r.methods {
                    jitgate_rules::route::MethodSet::Any => None,
                    jitgate_rules::route::MethodSet::Only(m) => {
                        Some(m.iter().map(|m| m.as_str().to_string()).collect())
                    }
                },
                host: r.host.as_ref().map(|h| match h {
                    jitgate_rules::route::HostPattern::Exact(h) => h.clone(),
                    jitgate_rules::route::HostPattern::Suffix(s) => format!("*{s}"),
                }),
                path: r.path.source.clone(),
                upstream: r.upstream.clone(),
                enforce: r.enforce,
                location: r.location.to_string(),
            })
            .collect();
        let upstreams = table
            .config()
            .upstreams
            .iter()
            .map(|u| UpstreamInfo {
                name: u.name.clone(),
                url: u.url.to_string(),
            })
            .collect();
        let attempt = |a: &Attempt| ReloadAttempt {
            at: humantime::format_rfc3339_seconds(a.at).to_string(),
            trigger: a.trigger.as_str().to_string(),
            version: a.version.clone(),
            ok: a.errors.is_empty(),
            errors: a.errors.clone(),
        };
        let last_reload = self
            .last_attempt
            .lock()
            .ok()
            .and_then(|a| a.as_ref().map(attempt));
        let last_reload_error = self
            .last_error
            .lock()
            .ok()
            .and_then(|a| a.as_ref().map(attempt));
        Rules {
            file: self.config_path.display().to_string(),
            version: table.version().to_string(),
            loaded_at: humantime::format_rfc3339_seconds(snap.loaded_at).to_string(),
            warnings: render(table.warnings()),
            upstreams,
            routes,
            last_reload,
            last_reload_error,
        }
    }
}

/// The most errors a `rules.rejected` event lists (`errorCount` has the total).
const MAX_AUDITED_ERRORS: usize = 50;

/// The one-line reason a PUT was refused before its table was validated or while writing it,
/// as `lastReloadError` and the audit show it.
fn refused_message(path: &Path, refused: &SourceRefused) -> String {
    match refused {
        SourceRefused::DiskChanged { current, on_disk } => format!(
            "{}: error: the file on disk (version {on_disk}) is not the table in force \
             ({current}); reload or fix it first",
            path.display()
        ),
        SourceRefused::NotWritable(m) | SourceRefused::Io(m) => {
            format!("{}: error: {m}", path.display())
        }
        SourceRefused::Stale { current } => {
            format!(
                "{}: error: stale If-Match; {current} is in force",
                path.display()
            )
        }
        SourceRefused::Invalid(r) => r.errors.join("; "),
    }
}

/// Settings read only at start: a change is reported, not applied (listeners are never
/// re-bound).
fn restart_notices(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.server.listen != new.server.listen {
        out.push(format!(
            "server.listen changed to {} but listeners are never re-bound; still serving {} until restart",
            new.server.listen, old.server.listen
        ));
    }
    if old.server.admin_listen != new.server.admin_listen {
        out.push(format!(
            "server.admin_listen changed to {} but listeners are never re-bound; still serving {} until restart",
            new.server.admin_listen, old.server.admin_listen
        ));
    }
    if old.server.tls.is_some() != new.server.tls.is_some() {
        out.push(
            "server.tls was added or removed; the listener keeps its protocol until restart".into(),
        );
    }
    if old.server.header_read_timeout != new.server.header_read_timeout
        || old.server.shutdown_grace != new.server.shutdown_grace
        || old.server.watch != new.server.watch
        || old.server.max_connections != new.server.max_connections
    {
        out.push(
            "server.header_read_timeout, shutdown_grace, watch and max_connections take effect at restart"
                .into(),
        );
    }
    if old.store != new.store {
        out.push("store settings changed; they take effect at restart".into());
    }
    if old.audit != new.audit {
        out.push("[audit] settings changed; they take effect at restart".into());
    }
    if old.approvals.signing_key != new.approvals.signing_key
        || old.approvals.reconcile_interval != new.approvals.reconcile_interval
    {
        out.push("[approvals] signing_key and reconcile_interval take effect at restart".into());
    }
    out
}
