//! Shared harness for the end-to-end tests: a recording origin (hyper, h1 + h2c + TLS), a
//! byte-recording HTTP/1.1 origin, a launcher for the real `jitgate` binary, test clients, a
//! throwaway PKI and minimal WebSocket framing.
//!
//! Each integration test binary does `mod common;` and uses what it needs, hence the
//! `dead_code` allowance.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

pub mod approval;
pub mod client;
pub mod cluster;
pub mod gateway;
pub mod holders;
pub mod hooks;
pub mod metrics;
pub mod notify;
pub mod origin;
pub mod raw_origin;
pub mod redteam;
pub mod relay;
pub mod sentinel;
pub mod tls;
pub mod ws;

pub use approval::{
    admin_call, approve, approve_retrying, approve_route_config, audit_kinds, bearer_of, deny,
    hold_deploy, identity_and_admin_toml, pending_deploys, policy_config, signing_key_pem,
    token_of, wait_audit, wait_pending, wait_status, wait_store_ok, RedisServer,
};
pub use client::{body, body_with_trailers, raw_request, send, Client, RawResponse, Response};
pub use cluster::RedisCluster;
pub use gateway::{Gateway, GatewayBuilder, Sig};
pub use hooks::{Hook, HookReceiver};
pub use origin::{sha256_hex, Origin, Recorded};
pub use raw_origin::{RawOrigin, RawRecorded};
pub use relay::Relay;
pub use sentinel::SentinelSet;
pub use tls::{IssuedCert, TestPki};
pub use ws::WsClient;
