//! `jitgate audit verify|export` (SPEC 10): check an audit hash chain, from a file (an
//! `[audit] file`, or an export) or from the store through the admin plane, and export the
//! store's events as JSON lines.
//!
//! Exit codes: 0 the chain is whole (or the export was written), 1 the chain is broken (the
//! message names the first broken event's `seq`), the admin API refused, or a file cannot be
//! read, 2 usage errors, 3 the admin API could not be reached or did not answer properly.
//! Every failure is one line on stderr starting with `jitgate: `.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use jitgate_rules::ticket::{AuditEvent, ChainBreak, ChainCheck};
use jitgate_rules::Timestamp;

use crate::admin_client::{
    clean, refused, runtime, unreachable, AdminApi, AdminArgs, ClientError, EXIT_USAGE,
};

/// Events asked for per page of `GET /v1/audit`.
const PAGE: usize = 1000;

/// `jitgate audit`: verify and export the audit trail.
#[derive(Args)]
#[command(after_help = "\
verify FILE checks an [audit] file (or an export) on its own. Without FILE, verify and export \
read the store's chain through the admin API, located and authenticated like `jitgate tickets`: \
the URL is --admin, else $JITGATE_ADMIN_URL, else http://<admin_listen> of --config (or \
./proxy.toml when it exists), else http://127.0.0.1:9090; the token (an operator's) is --token, \
else $JITGATE_ADMIN_TOKEN.

--since TIME (RFC 3339, or a duration such as 2h meaning that long ago) starts at the first \
event at or after TIME and takes every event after it in the chain; verify then trusts that \
first event's `prev`.

Exit codes: 0 whole chain (or export written); 1 broken chain (naming the first broken \
event's seq), refused by the admin API, or unreadable file; 2 usage error; 3 the admin API \
could not be reached.")]
pub struct AuditArgs {
    #[command(flatten)]
    admin: AdminArgs,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify a hash chain: FILE, or the store's through the admin API. Exit 1 naming the
    /// first broken event's seq.
    Verify {
        /// An [audit] file or an export (JSON lines); without it, the store's chain.
        file: Option<PathBuf>,
        /// Start at the first event at or after TIME (store only).
        #[arg(long, value_name = "TIME", value_parser = parse_since)]
        since: Option<Timestamp>,
    },
    /// Write the store's audit events to stdout as JSON lines, in chain order.
    Export {
        /// Start at the first event at or after TIME.
        #[arg(long, value_name = "TIME", value_parser = parse_since)]
        since: Option<Timestamp>,
    },
}

/// RFC 3339, or a duration meaning that long ago.
fn parse_since(s: &str) -> Result<Timestamp, String> {
    if let Ok(t) = Timestamp::parse_rfc3339(s.trim()) {
        return Ok(t);
    }
    match jitgate_rules::parse_duration(s.trim()) {
        Ok(d) => {
            let now = now_ms();
            let ago = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            Ok(Timestamp::from_millis(now.saturating_sub(ago)))
        }
        Err(_) => Err(
            "expected an RFC 3339 time (2026-11-22T10:30:00Z) or a duration ago (2h)".to_string(),
        ),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn usage(reason: &str) -> ExitCode {
    eprintln!("jitgate: {reason}");
    ExitCode::from(EXIT_USAGE)
}

/// Runs `jitgate audit ...`.
pub fn run(args: AuditArgs) -> ExitCode {
    if let AuditCommand::Verify {
        file: Some(file),
        since,
    } = &args.command
    {
        if args.admin.admin.is_some() {
            return usage("give either FILE or --admin URL, not both");
        }
        if since.is_some() {
            return usage("--since applies to the store's chain; a file is verified whole");
        }
        return verify_file(file);
    }
    let admin = match args.admin.client() {
        Ok(a) => a,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        match args.command {
            AuditCommand::Verify { since, .. } => verify_store(&admin, since).await,
            AuditCommand::Export { since } => export(&admin, since).await,
        }
    })
}

// === verify FILE ===

/// What a whole chain came to.
fn summary(n: u64, check: &ChainCheck) -> String {
    if n == 0 {
        "no events".to_string()
    } else {
        format!(
            "{n} event(s), chain intact up to seq {} (hash {})",
            check.next_seq() - 1,
            check.head()
        )
    }
}

fn verify_file(path: &Path) -> ExitCode {
    let shown = path.display();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return refused(&format!("cannot read {shown}: {e}")),
    };
    let mut reader = BufReader::new(file);
    let mut check = ChainCheck::new();
    let mut line = Vec::new();
    let mut number = 0u64;
    let mut events = 0u64;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return refused(&format!("cannot read {shown}: {e}")),
        }
        number += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let checked = match serde_json::from_slice::<Value>(line.trim_ascii_end()) {
            Ok(raw) => check.check(&raw),
            Err(e) => Err(ChainBreak {
                seq: check.next_seq(),
                why: format!("not JSON: {e}"),
            }),
        };
        if let Err(broken) = checked {
            return refused(&format!(
                "{shown}:{number}: broken at {}",
                clean(&broken.to_string())
            ));
        }
        events += 1;
    }
    println!("{shown}: {}", summary(events, &check));
    ExitCode::SUCCESS
}

// === the store's chain ===

/// Why paging stopped.
enum Stop {
    /// The admin API refused (exit 1).
    Refused(String),
    /// No proper answer (exit 3).
    Unreachable(String),
}

impl Stop {
    fn exit(self) -> ExitCode {
        match self {
            Stop::Refused(r) => refused(&r),
            Stop::Unreachable(r) => unreachable(&r),
        }
    }
}

/// Reads the store's chain a page at a time, in chain order: from its start, or from the
/// first event at or after `since` (found with the `since` filter) on, every event after it.
struct Pager<'a> {
    admin: &'a AdminApi,
    /// Looking for the first event at or after this.
    since: Option<Timestamp>,
    cursor: Option<String>,
    done: bool,
}

impl<'a> Pager<'a> {
    fn new(admin: &'a AdminApi, since: Option<Timestamp>) -> Pager<'a> {
        Pager {
            admin,
            since,
            cursor: None,
            done: false,
        }
    }

    /// The next page's events as written; `None` at the end.
    async fn next(&mut self) -> Result<Option<Vec<Value>>, Stop> {
        while !self.done {
            let mut query = Vec::new();
            match self.since {
                // One event: the starting point; then no time filter.
                Some(t) => {
                    query.push(format!("since={}", t.to_rfc3339()));
                    query.push("limit=1".to_string());
                }
                None => query.push(format!("limit={PAGE}")),
            }
            if let Some(c) = &self.cursor {
                query.push(format!("cursor={}", percent_encode(c)));
            }
            let page = match self.admin.audit_page(&query.join("&")).await {
                Ok(p) => p,
                Err(ClientError::Refused(_, r)) => return Err(Stop::Refused(r)),
                Err(ClientError::Unreachable(r)) => return Err(Stop::Unreachable(r)),
            };
            let events = page.events;
            match page.next_cursor {
                None => self.done = true,
                Some(c) => self.cursor = Some(c),
            }
            if !events.is_empty() {
                self.since = None;
                return Ok(Some(events));
            }
        }
        Ok(None)
    }
}

/// Query-string encoding of a value (cursors are opaque: encode whatever they hold).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn verify_store(admin: &AdminApi, since: Option<Timestamp>) -> ExitCode {
    let mut pager = Pager::new(admin, since);
    let mut check: Option<ChainCheck> = since.is_none().then(ChainCheck::new);
    let mut events = 0u64;
    loop {
        let page = match pager.next().await {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(stop) => return stop.exit(),
        };
        for raw in &page {
            // From a point in the chain, its first event's `prev` is taken on trust.
            let check = check.get_or_insert_with(|| starting_at(raw));
            if let Err(broken) = check.check(raw) {
                return refused(&format!(
                    "the store's audit chain at {} is broken at {}",
                    admin.base,
                    clean(&broken.to_string())
                ));
            }
            events += 1;
        }
    }
    let found = match (&check, since) {
        (Some(c), _) => summary(events, c),
        (None, Some(t)) => format!("no events at or after {}", t.to_rfc3339()),
        (None, None) => "no events".to_string(),
    };
    println!("the store's audit chain at {}: {found}", admin.base);
    ExitCode::SUCCESS
}

/// A check starting just before `raw` (its `prev` and `seq - 1`), or from the chain's start
/// when `raw` is not an event at all (so the check names it).
fn starting_at(raw: &Value) -> ChainCheck {
    match serde_json::from_value::<AuditEvent>(raw.clone()) {
        Ok(e) => ChainCheck::after(&e.prev, e.seq.saturating_sub(1)),
        Err(_) => ChainCheck::new(),
    }
}

async fn export(admin: &AdminApi, since: Option<Timestamp>) -> ExitCode {
    let mut pager = Pager::new(admin, since);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    loop {
        let page = match pager.next().await {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(stop) => {
                let _ = out.flush();
                return stop.exit();
            }
        };
        for raw in &page {
            if let Err(e) = writeln!(out, "{raw}") {
                return refused(&format!("cannot write to stdout: {e}"));
            }
        }
    }
    if let Err(e) = out.flush() {
        return refused(&format!("cannot write to stdout: {e}"));
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_time_or_a_duration_ago() {
        assert_eq!(
            parse_since("2026-11-22T10:30:00Z"),
            Ok(Timestamp::from_millis(1_795_343_400_000))
        );
        let before = now_ms();
        let two_hours_ago = parse_since("2h").expect("a duration").as_millis();
        let after = now_ms();
        assert!((before - 7_200_000..=after - 7_200_000).contains(&two_hours_ago));
        assert!(parse_since("yesterday").is_err());
    }

    #[test]
    fn cursors_are_encoded_whatever_they_hold() {
        assert_eq!(percent_encode("c1.42"), "c1.42");
        assert_eq!(percent_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
