//! Config model, path canonicalisation, route matching and policy evaluation for jitgate.
//!
//! Everything here is pure: no sockets, no Redis, no file reads. The gateway reads
//! `proxy.toml`, hands the text to [`RuleTable::parse`], builds each request's [`Canonical`]
//! view once at the edge, and resolves it against the table ([`RuleTable::resolve`]).
#![forbid(unsafe_code)]

pub mod canon;
pub mod config;
pub mod diag;
pub mod form;
pub mod headers;
mod json;
pub mod matcher;
pub mod policy;
pub mod request;
pub mod route;
pub mod shadow;
pub mod table;
pub mod ticket;
pub mod units;

pub use canon::{CanonError, CanonOptions, CanonTarget};
pub use config::Config;
pub use diag::{Diagnostic, Severity};
pub use matcher::Matcher;
pub use request::{Canonical, Edge, EdgeError};
pub use route::{Action, RequestView, Route};
pub use table::{ExplainStep, Explanation, RuleTable, Unresolved};
pub use ticket::{
    Approver, AuditDraft, AuditEvent, AuditKind, Grant, GrantId, IdError, Mode, RequestSnapshot,
    Requester, Status, Ticket, TicketDraft, TicketId, Timestamp, TransitionError, Vote,
};
pub use units::{format_duration, parse_duration, parse_rate, parse_size};
