//! The jitgate data plane (listeners, TLS, canonical forwarding) and admin plane
//! (health, decision API, rule table, reload, the approvers' web page).
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod approval;
pub mod audit_sink;
pub mod body;
pub mod budget;
pub mod context;
pub mod contract;
pub mod engine;
pub mod error;
pub mod events;
pub mod forward;
pub mod grpc;
pub mod headers;
pub mod metrics;
pub mod notify;
pub mod openapi;
pub mod problem;
pub mod proxy;
pub mod rate;
pub mod rules_file;
pub mod server;
pub mod state;
pub mod tls;
pub mod ui;
pub mod upstream;

pub use error::GatewayError;
pub use problem::{Fault, Problem};
pub use server::{Gateway, StartError};
pub use state::{Shared, Snapshot, Trigger};
