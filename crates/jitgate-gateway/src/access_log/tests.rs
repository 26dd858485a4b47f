#![allow(clippy::unwrap_used)]

use super::*;

fn entry<'a>(path: &'a str, request_id: &'a str) -> Entry<'a> {
    Entry {
        at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        request_id,
        peer: "::ffff:10.0.0.7".parse().unwrap(),
        method: "POST",
        path,
        version: Version::HTTP_11,
        status: 202,
        route: Some("payments"),
        action: "approve",
        ticket: Some("tkt_01ABC"),
        duration: Duration::from_micros(1234),
    }
}

#[test]
fn a_text_line_names_every_field() {
    let mut out = Vec::new();
    text(&entry("/v1/pay", "abc-1"), &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "ts=2023-11-14T22:13:20.123Z request_id=\"abc-1\" peer=10.0.0.7 method=\"POST\" \
         path=\"/v1/pay\" version=HTTP/1.1 status=202 route=\"payments\" action=approve \
         ticket=\"tkt_01ABC\" duration_ms=1.234"
    );
}

#[test]
fn a_json_line_is_one_object() {
    let mut out = Vec::new();
    json(&entry("/v1/pay", "abc-1"), &mut out);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["path"], "/v1/pay");
    assert_eq!(v["peer"], "10.0.0.7");
    assert_eq!(v["status"], 202);
    assert_eq!(v["route"], "payments");
    assert_eq!(v["ticket"], "tkt_01ABC");
    assert_eq!(v["requestId"], "abc-1");
    assert_eq!(v["durationMs"], 1.234);
    assert_eq!(v["ts"], "2023-11-14T22:13:20.123Z");
}

#[test]
fn no_client_value_can_split_or_forge_a_line() {
    let hostile = "/a\" status=200 route=\"x\n ts=forged\r\u{1b}[2J";
    let mut out = Vec::new();
    json(&entry(hostile, "id"), &mut out);
    let line = String::from_utf8(out).unwrap();
    assert!(!line.contains(['\n', '\r', '\u{1b}']), "{line}");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["path"], hostile);
    assert_eq!(v["status"], 202);

    let mut out = Vec::new();
    text(&entry(hostile, "id"), &mut out);
    let line = String::from_utf8(out).unwrap();
    assert!(!line.contains(['\n', '\r', '\u{1b}']), "{line}");
    // The path is one quoted value, and the real fields follow it.
    let rest = &line[line.find(" path=").unwrap() + " path=".len()..];
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<String>();
    assert_eq!(values.next().unwrap().unwrap(), hostile);
    assert!(
        rest[values.byte_offset()..].starts_with(" version=HTTP/1.1 status=202 "),
        "{line}"
    );
}

#[test]
fn raw_targets_are_clipped_on_a_character_boundary() {
    let long = "é".repeat(200);
    let clipped = clip_raw(&long);
    assert!(clipped.len() <= MAX_RAW_TARGET && clipped.len() >= MAX_RAW_TARGET - 1);
    assert!(long.starts_with(clipped));
    assert_eq!(clip_raw("/short"), "/short");
    assert_eq!(clip_raw("/account;jsessionid=SECRET/x"), "/account");
}

#[test]
fn durations_and_times_are_written_exactly() {
    let ms = |d: Duration| {
        let mut out = Vec::new();
        millis(d, &mut out);
        String::from_utf8(out).unwrap()
    };
    assert_eq!(ms(Duration::from_micros(412)), "0.412");
    assert_eq!(ms(Duration::from_micros(7)), "0.007");
    assert_eq!(ms(Duration::from_millis(8_123_455) / 1000), "8123.455");
    assert_eq!(ms(Duration::from_secs(3600)), "3600000.000");
    let ts = |at: SystemTime| {
        let mut out = Vec::new();
        timestamp(at, &mut out);
        String::from_utf8(out).unwrap()
    };
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_007);
    assert_eq!(ts(at), "2023-11-14T22:13:20.007Z");
    // The next second, on the same thread: the cached part moves on.
    assert_eq!(
        ts(at + Duration::from_millis(1_000)),
        "2023-11-14T22:13:21.007Z"
    );
    assert_eq!(
        ts(at + Duration::from_millis(86_400_000)),
        "2023-11-15T22:13:20.007Z"
    );
}
