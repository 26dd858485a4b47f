#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn grpc_clients_get_trailers_only_statuses() {
    let id = TicketId::new(1_795_343_400_000, 7);
    let cases = [
        (GatewayError::Denied, "7"),
        (GatewayError::Unauthenticated("x".into()), "16"),
        (
            GatewayError::Pending {
                ticket: id.clone(),
                expires_at: Timestamp(0),
            },
            "9",
        ),
        (GatewayError::StoreUnavailable { ticket: None }, "14"),
        (GatewayError::Malformed("x".into()), "3"),
    ];
    for (e, code) in cases {
        let resp = e.respond(None, true);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert_eq!(resp.headers()["grpc-status"], code);
        assert!(resp.headers().contains_key("grpc-message"));
    }
    let pending = GatewayError::Pending {
        ticket: id.clone(),
        expires_at: Timestamp(0),
    }
    .respond(None, true);
    assert_eq!(pending.headers()["jit-ticket"], id.as_str());
}

#[test]
fn problem_answers_carry_their_headers() {
    let id = TicketId::new(1_795_343_400_000, 7);
    let r = GatewayError::Pending {
        ticket: id.clone(),
        expires_at: Timestamp(0),
    }
    .respond(None, false);
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["jit-ticket"], id.as_str());
    assert_eq!(
        r.headers()["location"],
        format!("/.well-known/jitgate/tickets/{id}").as_str()
    );
    let r = GatewayError::MethodNotAllowed {
        allow: "GET, HEAD",
        path: "/x".into(),
    }
    .respond(None, false);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    let r = GatewayError::TooManyPending {
        detail: "x".into(),
        retry_after: Duration::from_secs(90),
    }
    .respond(None, false);
    assert_eq!(r.headers()["retry-after"], "90");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}
