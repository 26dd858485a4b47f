//! Command-line interface: `serve`, `check`, `explain`, `demo`, `token`, `tickets`, `audit`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use http::{HeaderName, HeaderValue, Method};

use jitgate_gateway::state::load_table;
use jitgate_gateway::Gateway;
use jitgate_rules::policy::PolicyInput;
use jitgate_rules::route::{ApprovalMode, ApprovalPolicy};
use jitgate_rules::{
    format_duration, parse_duration, Canonical, RuleTable, Severity, Timestamp, Unresolved,
};

#[derive(Parser)]
#[command(
    name = "jitgate",
    version,
    about = "A reverse-proxy gateway that enforces just-in-time approval inline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the data and admin planes from a proxy.toml.
    Serve {
        /// The rule table.
        #[arg(long, short, default_value = "proxy.toml")]
        config: PathBuf,
    },
    /// Validate a proxy.toml: every error with file:line:column; exit 1 if any.
    Check {
        /// The rule table.
        #[arg(default_value = "proxy.toml")]
        file: PathBuf,
    },
    /// Show the canonical form of a request and which route matches it, and why.
    Explain {
        /// The rule table.
        #[arg(long, short, default_value = "proxy.toml")]
        config: PathBuf,
        /// Extra request header, `Name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Client address for `source` conditions.
        #[arg(long, default_value = "127.0.0.1")]
        source: std::net::IpAddr,
        /// The requester's user, for approval policies (anonymous when absent).
        #[arg(long)]
        user: Option<String>,
        /// A group of the requester (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// When the request arrives, RFC 3339 (default: now), for policy windows.
        #[arg(long)]
        at: Option<String>,
        /// The method, e.g. POST.
        method: String,
        /// The URL (`http://host/path?query`) or an origin-form target (`/path?query`).
        url: String,
    },
    /// Start an echo upstream and the gateway with proxy.toml, and walk through what they do.
    Demo {
        /// The rule table (the built-in example when the file does not exist).
        #[arg(long, short, default_value = "proxy.toml")]
        config: PathBuf,
        /// Run the walkthrough and exit instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
    },
    /// Mint a development JWT for a config whose [identity.jwt] uses hs256_secret_env.
    Token {
        /// The rule table (its [identity.jwt] gives the secret's variable, issuer, audience
        /// and groups claim; or [admin.jwt] with --admin).
        #[arg(long, short, default_value = "proxy.toml")]
        config: PathBuf,
        /// Mint for the admin plane's [admin.jwt] instead of [identity.jwt].
        #[arg(long)]
        admin: bool,
        /// The user (`sub`).
        #[arg(long)]
        user: String,
        /// A group (repeatable).
        #[arg(long = "group", short = 'g')]
        groups: Vec<String>,
        /// Validity, e.g. 1h.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// List, show, approve and deny approval tickets through the admin API.
    Tickets(crate::tickets_cli::TicketsArgs),
    /// Verify the audit hash chain (an [audit] file, or the store's) and export it.
    Audit(crate::audit_cli::AuditArgs),
    /// Print the admin plane's OpenAPI 3.1 document (as served at /v1/openapi.json).
    Openapi,
    /// A small echo origin (used by the demo and load tests).
    #[command(hide = true)]
    EchoOrigin {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's walkthrough and the tickets client's answers are their output; their logs
    // stay quiet unless asked for.
    let quiet = matches!(
        cli.command,
        Command::Demo { .. } | Command::Tickets(_) | Command::Audit(_) | Command::Openapi
    );
    init_logging(if quiet { "error" } else { "info" });
    match cli.command {
        Command::Check { file } => check(&file),
        Command::Explain {
            config,
            headers,
            source,
            user,
            groups,
            at,
            method,
            url,
        } => {
            let who = Who { user, groups, at };
            explain(&config, &headers, source, &who, &method, &url)
        }
        Command::Token {
            config,
            admin,
            user,
            groups,
            ttl,
        } => token(&config, admin, &user, &groups, &ttl),
        Command::Tickets(args) => crate::tickets_cli::run(args),
        Command::Openapi => {
            println!("{}", jitgate_gateway::openapi::document());
            ExitCode::SUCCESS
        }
        Command::Audit(args) => crate::audit_cli::run(args),
        Command::Serve { config } => {
            runtime().map_or(ExitCode::FAILURE, |rt| rt.block_on(serve(&config)))
        }
        Command::Demo { config, once } => runtime().map_or(ExitCode::FAILURE, |rt| {
            rt.block_on(crate::demo::run(&config, once))
        }),
        Command::EchoOrigin { listen } => runtime().map_or(ExitCode::FAILURE, |rt| {
            rt.block_on(async {
                match crate::echo::spawn(listen).await {
                    Ok(addr) => {
                        println!("jitgate: echo origin on http://{addr}");
                        shutdown_signal().await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&format!("cannot listen on {listen}: {e}")),
                }
            })
        }),
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JITGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("jitgate: cannot start the async runtime: {e}");
            None
        }
    }
}

/// One line on stderr and a non-zero exit.
pub fn fail(reason: &str) -> ExitCode {
    eprintln!("jitgate: {reason}");
    ExitCode::FAILURE
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn serve(config: &Path) -> ExitCode {
    let gateway = match Gateway::bind(config).await {
        Ok(g) => g,
        Err(jitgate_gateway::StartError::Config(errors)) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return fail(&format!(
                "{} is invalid ({} error(s)); not starting",
                config.display(),
                errors.len()
            ));
        }
        Err(e) => return fail(&e.to_string()),
    };
    announce(&gateway);
    match gateway.run(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

/// The two lines scripts and tests wait for, on stdout.
pub fn announce(gateway: &Gateway) {
    println!(
        "jitgate: data plane on {}://{}",
        gateway.data_scheme(),
        gateway.data_addr()
    );
    println!("jitgate: admin plane on http://{}", gateway.admin_addr());
}

fn token(config: &Path, admin: bool, user: &str, groups: &[String], ttl: &str) -> ExitCode {
    let table = match load_table(config) {
        Ok(t) => t,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return fail(&format!("{} is invalid", config.display()));
        }
    };
    let cfg = table.config();
    let jwt = if admin {
        cfg.admin.jwt.as_ref().or(cfg.identity.jwt.as_ref())
    } else {
        cfg.identity.jwt.as_ref()
    };
    let section = if admin {
        "[admin.jwt] (or [identity.jwt])"
    } else {
        "[identity.jwt]"
    };
    let Some(jwt) = jwt else {
        return fail(&format!("{} has no {section}", config.display()));
    };
    let Some(var) = &jwt.hs256_secret_env else {
        return fail(&format!(
            "{section} in {} does not use hs256_secret_env; only HS256 tokens can be minted here",
            config.display()
        ));
    };
    let Ok(secret) = std::env::var(var) else {
        return fail(&format!(
            "environment variable {var} (named by hs256_secret_env) is not set"
        ));
    };
    let ttl = match jitgate_rules::parse_duration(ttl) {
        Ok(d) => d,
        Err(e) => return fail(&format!("--ttl: {e}")),
    };
    match jitgate_identity::mint_hs256(
        secret.as_bytes(),
        user,
        groups,
        &jwt.groups_claim,
        ttl,
        jwt.issuer.as_deref(),
        jwt.audience.as_deref(),
    ) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("cannot mint a token: {e}")),
    }
}

fn check(file: &Path) -> ExitCode {
    let src = match std::fs::read_to_string(file) {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot read {}: {e}", file.display())),
    };
    match RuleTable::parse(&src, file) {
        Ok(table) => {
            if let Err(why) = jitgate_gateway::engine::check_store_url(table.config()) {
                return fail(&format!("{}: error: [store] url: {why}", file.display()));
            }
            for w in table.warnings() {
                println!("{w}");
            }
            println!(
                "{}: OK: {} route(s), {} upstream(s), {} warning(s), version {}",
                file.display(),
                table.routes().len(),
                table.config().upstreams.len(),
                table.warnings().len(),
                table.version()
            );
            ExitCode::SUCCESS
        }
        Err(diags) => {
            for d in &diags {
                println!("{d}");
            }
            let errors = diags
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            eprintln!(
                "jitgate: {}: {errors} error(s); the table is refused",
                file.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// What happens to a request on an approve route: break-glass, the auto-approve policies in
/// order (the first that holds applies; why each other does not), the rate, else who decides.
fn explain_approval(
    c: &Canonical,
    policy: &ApprovalPolicy,
    risk_model: Option<&jitgate_rules::policy::RiskModel>,
    who: &Who,
    at: Timestamp,
) {
    let requester = match &who.user {
        Some(u) if who.groups.is_empty() => u.clone(),
        Some(u) => format!("{u} (groups {})", who.groups.join(", ")),
        None => "an anonymous requester".to_string(),
    };
    println!("approval, as {requester} at {at}:");
    if policy.mode == ApprovalMode::Access && who.user.is_none() {
        println!("   refused 401: access routes need an authenticated requester");
        return;
    }
    if c.gateway_headers_named("jit-break-glass") {
        let reason = c.gateway_header("jit-break-glass").unwrap_or_default();
        let member = who.user.is_some()
            && who
                .groups
                .iter()
                .any(|g| policy.break_glass_groups.contains(g));
        if policy.break_glass_groups.is_empty() {
            println!("   break-glass: refused 403, the route allows none");
        } else if reason.is_empty() {
            println!("   break-glass: refused 403, no reason given");
        } else if !member {
            println!(
                "   break-glass: refused 403, not in {}",
                policy.break_glass_groups.join(", ")
            );
        } else {
            println!("   break-glass: PASSES at once, audited break_glass.used, ticket in REVIEW");
        }
        return;
    }
    let duration = if policy.mode == ApprovalMode::Access {
        let requested = match c.gateway_header("jit-duration").map(parse_duration) {
            None => None,
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                println!("   refused 400: Jit-Duration: {e}");
                return;
            }
        };
        match policy.grant_terms_for(requested) {
            Ok(terms) => terms.map(|t| std::time::Duration::from_millis(t.duration_ms)),
            Err(e) => {
                println!("   refused 400: {e}");
                return;
            }
        }
    } else {
        None
    };
    // The score as far as explain can tell: a source the requester used before, within the
    // rate, an empty body.
    let risk = risk_model.map(|m| {
        m.score(&jitgate_rules::policy::RiskInput {
            methods: c.methods(),
            body_len: 0,
            body_encoding: None,
            new_source: None,
            over_rate: false,
            now: at,
        })
    });
    if let Some(r) = &risk {
        let parts: Vec<String> = r
            .factors
            .iter()
            .map(|f| format!("{} +{} ({})", f.signal, f.points, f.detail))
            .collect();
        println!(
            "   risk score {} (assuming a known source, within the rate, an empty body){}{}",
            r.score,
            if parts.is_empty() { "" } else { ": " },
            parts.join(", ")
        );
    }
    let mut chosen = None;
    c.with_view(|v| {
        let input = PolicyInput {
            methods: v.methods,
            paths: v.paths,
            user: who.user.as_deref(),
            groups: &who.groups,
            source: v.source,
            headers: v.headers,
            duration,
            risk: risk.as_ref().map(|r| r.score),
            now: at,
        };
        for p in &policy.auto_approve {
            match p.check(&input) {
                Ok(()) if chosen.is_none() => {
                    println!("   auto_approve {}: APPLIES", p.name);
                    chosen = Some(p.name.clone());
                }
                Ok(()) => println!(
                    "   auto_approve {}: would apply, but {} comes first",
                    p.name,
                    chosen.as_deref().unwrap_or("?")
                ),
                Err(miss) => println!("   auto_approve {}: no, {miss}", p.name),
            }
        }
    });
    if chosen.is_some() {
        println!("   => approved by policy at once (unless the requester holds a usable grant, which is used first)");
        return;
    }
    if let Some(rate) = policy.approve_above_rate {
        if who.user.is_some() {
            println!(
                "   approve_above_rate {}/{}: passes while this requester stays within the rate (per replica), else held",
                rate.count,
                format_duration(rate.per)
            );
        } else {
            println!("   approve_above_rate: never for anonymous requesters");
        }
    }
    let approvers: Vec<String> = policy.approvers.iter().map(ToString::to_string).collect();
    println!(
        "   => held for approval by {} (quorum {})",
        approvers.join(", "),
        policy.quorum
    );
    if let Some(after) = policy.escalate_after {
        let to: Vec<String> = policy.escalate_to.iter().map(ToString::to_string).collect();
        println!(
            "      escalates to {} after {}",
            to.join(", "),
            format_duration(after)
        );
    }
}

/// Who `jitgate explain` asks as, and when.
struct Who {
    user: Option<String>,
    groups: Vec<String>,
    at: Option<String>,
}

fn explain(
    config: &Path,
    raw_headers: &[String],
    source: std::net::IpAddr,
    who: &Who,
    method: &str,
    url: &str,
) -> ExitCode {
    let at = match who.at.as_deref().map(Timestamp::parse_rfc3339) {
        None => Timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        ),
        Some(Ok(t)) => t,
        Some(Err(e)) => return fail(&format!("--at: {e}")),
    };
    let table = match load_table(config) {
        Ok(t) => t,
        Err(errors) => {
            for e in &errors {
                println!("{e}");
            }
            return fail(&format!("{} is invalid", config.display()));
        }
    };
    // Exactly what `serve` does: one canonical request, resolved against the table.
    let mut request = http::Request::builder().method(method).uri(url);
    for h in raw_headers {
        let Some((name, value)) = h.split_once(':') else {
            return fail(&format!("header must be `Name: value`: {h}"));
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) else {
            return fail(&format!("invalid header: {h}"));
        };
        request = request.header(name, value);
    }
    let mut parts = match request.body(()) {
        Ok(r) => r.into_parts().0,
        Err(e) => return fail(&format!("not a request `{method} {url}`: {e}")),
    };
    let edge = table.edge(source, parts.uri.scheme_str() == Some("https"));
    let c = match Canonical::build(&mut parts, &edge) {
        Ok(c) => c,
        Err(e) => {
            println!("rejected: 400 Bad Request: {e}");
            return ExitCode::FAILURE;
        }
    };
    let query = c.query().map(|q| format!("?{q}")).unwrap_or_default();
    println!("canonical: {} {}{query}", c.method(), c.path());
    println!("host: {}", c.host());
    if c.methods().len() > 1 {
        let names: Vec<&str> = c.methods().iter().map(Method::as_str).collect();
        println!("methods considered: {}", names.join(", "));
    }
    let mut buf = [""; jitgate_rules::request::READINGS];
    let paths = c.path_readings(&mut buf);
    if paths.len() > 1 {
        println!("path readings: {}", paths.join(", "));
    }
    if c.target().path() != c.path() {
        println!("forwarded path: {}", c.target().path());
    }
    if c.source() != source {
        println!("client address: {}", c.source());
    }
    let explanation = c.with_view(|v| table.explain(v));
    println!("{explanation}");
    match table.resolve(&c) {
        Ok(r) => {
            for shadow in table.shadows(&c, Some(r.index)) {
                println!(
                    "   shadow route {} would {} (recorded; it decides nothing)",
                    shadow.name,
                    shadow.action.as_str()
                );
            }
            if let Some(policy) = &r.approval {
                let risk = table.config().approvals.risk.as_ref();
                explain_approval(&c, policy, risk, who, at);
            }
        }
        Err(Unresolved::NoRoute) => return ExitCode::FAILURE,
        Err(e) => {
            println!("   but the gateway answers 400: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
