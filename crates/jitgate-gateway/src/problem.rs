//! RFC 9457 problem details: the one place gateway errors become HTTP answers.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{Map, Value};

use crate::body::ProxyBody;

/// Media type of every error the gateway answers itself.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Who failed, so logs and metrics can tell a bad client from a bad upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something we refuse.
    Downstream,
    /// The upstream failed or timed out.
    Upstream,
    /// Policy said no (deny, approval required).
    Policy,
    /// The gateway itself.
    Internal,
}

/// A problem details answer.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Short stable slug; the `type` member is `urn:jitgate:problem:<slug>`.
    pub slug: &'static str,
    /// Human summary of the problem type.
    pub title: &'static str,
    /// What happened to this request.
    pub detail: String,
    /// Who failed.
    pub fault: Fault,
    /// Extension members (`rule`, `errors`, ...).
    pub extensions: Map<String, Value>,
    /// With 405: the methods the resource supports, sent in `Allow` (RFC 9110 section 10.2.1).
    pub allow: Option<Box<str>>,
}

impl Problem {
    /// A problem with no extension members.
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
        fault: Fault,
    ) -> Problem {
        Problem {
            status,
            slug,
            title,
            detail: detail.into(),
            fault,
            extensions: Map::new(),
            allow: None,
        }
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Problem {
        self.extensions.insert(key.to_string(), value.into());
        self
    }

    /// 400 for a request target or header we refuse to interpret.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed or ambiguous request",
            detail,
            Fault::Downstream,
        )
    }

    /// 405 for `method` on `path`, which supports `allow` (`"GET, HEAD"`), also sent in
    /// `Allow` as RFC 9110 section 15.5.6 requires.
    pub fn method_not_allowed(method: &str, path: &str, allow: &str) -> Problem {
        let mut p = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("{method} is not supported on {path}; it supports {allow}"),
            Fault::Downstream,
        );
        p.allow = Some(allow.into());
        p
    }

    /// 401: missing or invalid credentials. Answered with `WWW-Authenticate: Bearer`.
    pub fn unauthenticated(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
            detail,
            Fault::Downstream,
        )
    }

    /// 503: the approval store cannot be reached (approve routes fail closed).
    pub fn store_unavailable(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Approval store unavailable",
            detail,
            Fault::Internal,
        )
    }

    /// The JSON body.
    pub fn to_json(&self) -> Value {
        let mut body = Map::with_capacity(5 + self.extensions.len());
        body.insert(
            "type".into(),
            Value::String(format!("urn:jitgate:problem:{}", self.slug)),
        );
        body.insert("title".into(), Value::String(self.title.into()));
        body.insert("status".into(), Value::from(self.status.as_u16()));
        body.insert("detail".into(), Value::String(self.detail.clone()));
        for (k, v) in &self.extensions {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }

    /// The body as the admin contract types it ([`crate::contract::Problem`]), for answers
    /// that carry a problem inside a JSON body (a batch decision's refused items).
    pub fn body(&self) -> crate::contract::Problem {
        let mut extensions = self.extensions.clone();
        let error = typed(&mut extensions, "error");
        let errors = typed(&mut extensions, "errors");
        let current_version = typed(&mut extensions, "currentVersion");
        let disk_version = typed(&mut extensions, "diskVersion");
        crate::contract::Problem {
            type_: format!("urn:jitgate:problem:{}", self.slug),
            title: self.title.to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            error,
            errors,
            current_version,
            disk_version,
            extensions,
        }
    }

    /// The HTTP answer.
    pub fn into_response(self) -> Response<ProxyBody> {
        let body = Bytes::from(self.to_json().to_string());
        let mut resp = Response::new(ProxyBody::full(body));
        *resp.status_mut() = self.status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Every credential jitgate accepts is a bearer token (RFC 9110 section 11.6.1).
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(allow) = self.allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            resp.headers_mut().insert(header::ALLOW, allow);
        }
        resp
    }
}

/// Takes extension member `key` out of `extensions` as a `T`; one of another shape stays an
/// untyped extension, so nothing is lost.
fn typed<T: serde::de::DeserializeOwned>(
    extensions: &mut Map<String, Value>,
    key: &str,
) -> Option<T> {
    let v = extensions.remove(key)?;
    match serde_json::from_value(v.clone()) {
        Ok(t) => Some(t),
        Err(_) => {
            extensions.insert(key.to_string(), v);
            None
        }
    }
}

/// A JSON answer of the admin plane from one of its contract types ([`crate::contract`]).
/// Members are written in alphabetical order, as the admin plane always wrote them.
pub fn json_body<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<ProxyBody> {
    match serde_json::to_value(body) {
        Ok(v) => json_response(status, &v),
        Err(e) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            format!("the answer could not be written: {e}"),
            Fault::Internal,
        )
        .into_response(),
    }
}

/// A JSON answer (admin plane).
pub fn json_response(status: StatusCode, value: &Value) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
