#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;

use jitgate_rules::ticket::{chain, AuditDraft, AuditKind, ChainCheck, Timestamp};
use serde_json::Value;

use super::*;

const WAIT: Duration = Duration::from_secs(30);

/// Store events numbered `seqs` of one chain (the others appended by other replicas).
fn stored(seqs: &[u64]) -> Vec<AuditEvent> {
    let last = seqs.iter().copied().max().unwrap_or(0);
    let mut prev = GENESIS.to_string();
    let mut out = Vec::new();
    for seq in 1..=last {
        let e = chain(
            &prev,
            seq,
            AuditDraft {
                at: Timestamp::from_millis(1_795_343_400_000 + seq),
                kind: AuditKind::TicketCreated,
                ticket: None,
                actor: None,
                requester: Some("bob".into()),
                route: Some("prod-deploy".into()),
                detail: serde_json::json!({ "n": seq }),
            },
        );
        prev.clone_from(&e.hash);
        if seqs.contains(&seq) {
            out.push(e);
        }
    }
    out
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The whole file verifies; returns its lines' store seqs.
fn verified(path: &Path) -> Vec<u64> {
    let mut check = ChainCheck::new();
    lines(path)
        .iter()
        .map(|l| {
            let e = check.check(l).unwrap_or_else(|b| panic!("{b}"));
            e.store_seq.unwrap()
        })
        .collect()
}

async fn write_all(file: AuditFile, events: &[AuditEvent]) -> SinkReport {
    let sink = file.start();
    let tap = sink.tap();
    for e in events {
        tap.send(e.clone()).unwrap();
    }
    sink.close(WAIT).await.expect("the writer finishes")
}

#[tokio::test]
async fn a_missing_file_starts_a_chain_that_verifies_and_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let file = AuditFile::open(&path).unwrap();
    assert_eq!(file.head(), (0, GENESIS));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let events = stored(&[2, 5, 9]);
    let report = write_all(file, &events).await;
    assert_eq!(
        report,
        SinkReport {
            written: 3,
            unwritten: 0
        }
    );
    assert_eq!(verified(&path), [2, 5, 9]);
    let first = &lines(&path)[0];
    assert_eq!(first["seq"], 1);
    assert_eq!(first["storeHash"], events[0].hash.as_str());
    assert_eq!(first["route"], "prod-deploy");
    assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
}

#[tokio::test]
async fn a_reopened_file_continues_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_all(AuditFile::open(&path).unwrap(), &stored(&[1, 2, 3])).await;
    let file = AuditFile::open(&path).unwrap();
    let last = lines(&path)[2].clone();
    assert_eq!(file.head(), (3, last["hash"].as_str().unwrap()));
    // A restarted memory store numbers from 1 again; the file's chain goes on.
    write_all(file, &stored(&[1, 2])).await;
    assert_eq!(verified(&path), [1, 2, 3, 1, 2]);
    assert_eq!(lines(&path)[4]["seq"], 5);
}

#[tokio::test]
async fn an_empty_or_blank_file_starts_a_new_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, "").unwrap();
    assert_eq!(AuditFile::open(&path).unwrap().head(), (0, GENESIS));
    std::fs::write(&path, "\n  \n").unwrap();
    let file = AuditFile::open(&path).unwrap();
    assert_eq!(file.head(), (0, GENESIS));
    write_all(file, &stored(&[1])).await;
    assert_eq!(verified(&path), [1]);
}

#[tokio::test]
async fn trailing_blank_lines_and_a_missing_final_newline_are_tolerated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_all(AuditFile::open(&path).unwrap(), &stored(&[1])).await;
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.trim_end()).unwrap();
    write_all(AuditFile::open(&path).unwrap(), &stored(&[1, 2])).await;
    assert_eq!(verified(&path), [1, 1, 2]);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"\n\n").unwrap();
    let file = AuditFile::open(&path).unwrap();
    assert_eq!(file.head().0, 3);
}

/// The one-line error of a file whose last line is broken.
fn refused(path: &Path) -> String {
    let e = AuditFile::open(path).expect_err("a broken last line refuses the start");
    assert!(matches!(e, SinkError::BrokenTail { .. }), "{e:?}");
    let text = e.to_string();
    assert_eq!(text.lines().count(), 1, "{text}");
    text
}

#[tokio::test]
async fn a_broken_last_line_refuses_to_continue_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_all(AuditFile::open(&path).unwrap(), &stored(&[1, 2, 3])).await;
    let good = std::fs::read_to_string(&path).unwrap();
    let at_line_3 = format!("{}:3: the last audit event is broken (", path.display());

    // Cut short, as a crash in the middle of a write would leave it.
    std::fs::write(&path, &good[..good.len() - 20]).unwrap();
    let e = refused(&path);
    assert!(e.starts_with(&at_line_3), "{e}");
    assert!(e.contains("not JSON"), "{e}");

    // Edited.
    std::fs::write(&path, good.replace("\"n\":3", "\"n\":4")).unwrap();
    let e = refused(&path);
    assert!(e.starts_with(&at_line_3), "{e}");
    assert!(e.contains("hash does not match"), "{e}");

    // Not an event; blank lines after it do not hide it.
    std::fs::write(&path, format!("{good}{{\"hello\":1}}\n\n")).unwrap();
    let e = refused(&path);
    assert!(e.starts_with(&format!("{}:4: ", path.display())), "{e}");
    assert!(e.contains("not an audit event"), "{e}");

    // Nothing was written to the refused file.
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{good}{{\"hello\":1}}\n\n")
    );
}

#[tokio::test]
async fn one_file_one_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let first = AuditFile::open(&path).unwrap();
    let e = AuditFile::open(&path).expect_err("locked");
    assert!(e.to_string().contains("another jitgate"), "{e}");
    drop(first);
    assert!(AuditFile::open(&path).is_ok());
}

#[tokio::test]
async fn a_partial_write_left_behind_is_cut_back_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_all(AuditFile::open(&path).unwrap(), &stored(&[1])).await;
    let mut file = AuditFile::open(&path).unwrap();
    // What a failed write that could not be cut back at once leaves.
    let mut raw = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    raw.write_all(b"{\"seq\":2,\"at\":").unwrap();
    file.append(&stored(&[2])[..]).unwrap();
    assert_eq!(verified(&path), [1, 2]);
}

#[tokio::test]
async fn a_file_truncated_by_something_else_is_not_appended_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_all(AuditFile::open(&path).unwrap(), &stored(&[1, 2])).await;
    let mut file = AuditFile::open(&path).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let e = file.append(&stored(&[3])).unwrap_err();
    assert!(e.to_string().contains("shrank"), "{e}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

/// Writes that fail (a full disk: /dev/full answers every write with ENOSPC) are retried
/// until the sink closes; what could not be written is reported, and nothing is lost
/// silently.
#[tokio::test]
async fn failing_writes_are_reported_not_hidden() {
    let full = std::fs::OpenOptions::new()
        .append(true)
        .open("/dev/full")
        .expect("/dev/full is needed for this test");
    let file = AuditFile {
        path: PathBuf::from("/dev/full"),
        file: full,
        len: 0,
        head: (0, GENESIS.to_string()),
        newline_first: false,
    };
    let report = write_all(file, &stored(&[1, 2, 3])).await;
    assert_eq!(
        report,
        SinkReport {
            written: 0,
            unwritten: 3
        }
    );
}

#[tokio::test]
async fn only_regular_files() {
    let e = AuditFile::open(Path::new("/dev/null")).expect_err("a device is refused");
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let e = AuditFile::open(dir.path()).expect_err("a directory is refused");
    assert!(e.to_string().starts_with("[audit] file "), "{e}");
}

/// The writer keeps up while the senders do not wait: events sent from many tasks at once
/// all land, in the order they were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_events_land_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let events = stored(&(1..=3000).collect::<Vec<_>>());
    let report = write_all(AuditFile::open(&path).unwrap(), &events).await;
    assert_eq!(report.written, 3000);
    assert_eq!(verified(&path), (1..=3000).collect::<Vec<_>>());
}
