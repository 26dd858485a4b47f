//! The admin plane: health, readiness and the rule table. Never served on the data port.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::body::ProxyBody;
use crate::problem::{json_response, Fault, Problem};
use crate::state::{Shared, Trigger};

/// Serves one admin request.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ProxyBody> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/healthz") => {
            json_response(StatusCode::OK, &json!({ "status": "ok" }))
        }
        (&Method::GET | &Method::HEAD, "/readyz") => {
            let snap = shared.snapshot();
            json_response(
                StatusCode::OK,
                &json!({ "status": "ready", "version": snap.table.version() }),
            )
        }
        (&Method::GET, "/v1/admin/rules") => json_response(StatusCode::OK, &shared.rules_json()),
        (&Method::POST, "/v1/admin/reload") => match shared.reload(Trigger::Admin).await {
            Ok(applied) => json_response(
                StatusCode::OK,
                &json!({
                    "version": applied.version,
                    "changed": applied.changed,
                    "warnings": applied.warnings,
                }),
            ),
            Err(rejected) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-config",
                "Rule table rejected",
                format!(
                    "{} error(s) in {}; the running table is unchanged",
                    rejected.errors.len(),
                    shared.config_path().display()
                ),
                Fault::Downstream,
            )
            .with("errors", rejected.errors)
            .into_response(),
        },
        (_, "/healthz" | "/readyz" | "/v1/admin/rules" | "/v1/admin/reload") => Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("{} is not supported on {path}", req.method()),
            Fault::Downstream,
        )
        .into_response(),
        _ => Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("no admin endpoint at {path}"),
            Fault::Downstream,
        )
        .into_response(),
    }
}
