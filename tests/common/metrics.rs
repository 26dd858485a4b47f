//! Reading a gateway's `/metrics` and access log in tests: the scrape is parsed by the
//! Prometheus project's own parsers (`tests/metrics/parse.py`: strictly as OpenMetrics text,
//! and as the classic text format), and access-log lines are read from the gateway's stdout.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::client::send;
use super::gateway::Gateway;

/// How long the polling helpers wait.
const WAIT: Duration = Duration::from_secs(20);

/// One sample of a scrape.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Its name (`jitgate_requests_total`, `..._bucket`, ...).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed scrape, with the text it came from.
pub struct Scrape {
    /// Every sample.
    pub samples: Vec<Sample>,
    /// The exposition as served.
    pub text: String,
}

impl Scrape {
    /// The value of `name` with exactly `labels`, if exposed.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// [`Scrape::get`], 0 when not exposed (a labelled series appears with its first event).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Sum of `name` over every series whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Every (name, labels) series exposed.
    pub fn series(&self) -> BTreeSet<String> {
        self.samples
            .iter()
            .map(|s| format!("{}{:?}", s.name, s.labels))
            .collect()
    }
}

/// Scrapes `gw`'s `/metrics`: 200, the OpenMetrics media type, and text both parsers take.
pub async fn scrape(gw: &Gateway) -> Scrape {
    let r = send("GET", &gw.admin("/metrics"), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = r.text();
    let parsed = tokio::task::spawn_blocking({
        let text = text.clone();
        move || parse(&text)
    })
    .await
    .unwrap();
    let samples = parsed["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_string(),
            labels: serde_json::from_value(s["labels"].clone()).unwrap(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect::<Vec<_>>();
    assert!(parsed["classic"].as_u64().unwrap() > 0, "{text}");
    Scrape { samples, text }
}

/// Runs the Prometheus parsers over `text` (scripts/test installs `prometheus_client`).
fn parse(text: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/metrics/parse.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parsers refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls the scrape until `check` holds.
pub async fn scrape_until(gw: &Gateway, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = scrape(gw).await;
        if check(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {WAIT:?}:\n{}",
            s.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the gateway's stdout has a line containing every one of `needles`; returns it.
pub async fn access_line(gw: &Gateway, needles: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(line) = gw
            .stdout_text()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return line.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no access-log line with {needles:?}:\n{}",
            gw.stdout_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The access-log lines (everything on stdout but the address announcements).
pub fn access_lines(gw: &Gateway) -> Vec<String> {
    gw.stdout_text()
        .lines()
        .filter(|l| !l.starts_with("jitgate: "))
        .map(str::to_string)
        .collect()
}
