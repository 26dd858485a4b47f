//! What one data-plane request carries through its phases (edge, resolve, act, forward): the
//! connection, the table generation it started with, and how to answer it.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use http::{HeaderValue, Response};
use jitgate_rules::route::Route;
use jitgate_rules::ticket::TicketId;
use jitgate_rules::Edge;

use crate::body::ProxyBody;
use crate::engine::Engine;
use crate::error::GatewayError;
use crate::state::{Shared, Snapshot};

/// What we know about the client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether it spoke TLS to us.
    pub tls: bool,
    /// The peer's canonical address as a header value, formatted once per connection for
    /// `X-Forwarded-For`.
    pub peer_value: Option<HeaderValue>,
}

impl ConnInfo {
    /// Describes a client connection.
    pub fn new(peer: SocketAddr, tls: bool) -> ConnInfo {
        let text = peer.ip().to_canonical().to_string();
        ConnInfo {
            peer,
            tls,
            peer_value: HeaderValue::from_str(&text).ok(),
        }
    }
}

/// One data-plane request in flight: everything its phases share. The canonical request and
/// its body are passed by value from phase to phase, so no phase can reach back and rebuild
/// what an earlier one produced.
pub struct Exchange<'a> {
    /// Shared state: the live table (for re-checks at release) and the approval engine.
    pub shared: &'a Arc<Shared>,
    /// The table generation this request started with.
    pub snap: Arc<Snapshot>,
    /// The client connection.
    pub conn: &'a ConnInfo,
    /// A gRPC call: the gateway's own answers are gRPC statuses.
    pub grpc: bool,
    /// What the phases learnt, for the access log and the metrics.
    pub note: Note,
}

/// What the phases of one request learnt about it, written once each as they learn it and
/// read when the request is answered (the access log, `jitgate_requests_total`).
#[derive(Debug, Default)]
pub struct Note {
    /// The index of the route that decided, in the request's own table generation.
    pub route: OnceLock<usize>,
    /// The ticket the request was held on or released by.
    pub ticket: OnceLock<TicketId>,
    /// Every method the request was read as (`GET+DELETE`), when an override added one.
    pub methods: OnceLock<String>,
    /// `X-Request-Id`, decided at the edge.
    pub request_id: OnceLock<HeaderValue>,
}

impl Exchange<'_> {
    /// The approval engine.
    pub fn engine(&self) -> &Arc<Engine> {
        self.shared.engine()
    }

    /// The edge settings of this request's table generation.
    pub fn edge(&self) -> Edge<'_> {
        self.snap.table.edge(self.conn.peer.ip(), self.conn.tls)
    }

    /// Notes the route that decided this request.
    pub fn decided_by(&self, route: &Route) {
        let _ = self.note.route.set(route.index);
    }

    /// Notes the request's id (see [`crate::headers::request_id`]).
    pub fn identify(&self, id: HeaderValue) {
        let _ = self.note.request_id.set(id);
    }

    /// The request's id: the one the edge decided, or a new one when the request never got
    /// that far.
    pub fn request_id(&self) -> HeaderValue {
        self.note
            .request_id
            .get_or_init(|| crate::headers::request_id(&http::HeaderMap::new()))
            .clone()
    }

    /// Notes the methods the request was read as, once every reading is known, when there is
    /// more than one (an override header or a body `_method`).
    pub fn read_as(&self, canonical: &jitgate_rules::Canonical) {
        if canonical.methods().len() > 1 {
            let _ = self.note.methods.set(canonical.method_label());
        }
    }

    /// Notes the ticket this request is about.
    pub fn about(&self, ticket: &TicketId) {
        let _ = self.note.ticket.set(ticket.clone());
    }

    /// The gateway's own answer, shaped for this client (gRPC, route template, problem+json).
    pub fn answer(&self, e: GatewayError, route: Option<&Route>) -> Response<ProxyBody> {
        e.respond(route, self.grpc)
    }
}
