//! Error answers as Mailchimp sends them: `application/problem+json` with `type`, `title`,
//! `status`, `detail` and a fresh `instance` id, or, for what a CDN in front of the API
//! answers (502, 503, 504), an HTML page that is not JSON at all.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::random_hex;

/// Why the API turns a request down. Each kind is written out once, below, so handlers can
/// use `?` and still answer exactly as Mailchimp does.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// 400 "Invalid Resource" with this detail.
    Invalid(String),
    /// 400 "Invalid Resource" naming `url` in its `errors`.
    InvalidUrl,
    /// 400 for a body that is not the JSON expected.
    JsonParse,
    NotFound,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Invalid(detail) => invalid_resource(&detail),
            Refusal::InvalidUrl => invalid_url(),
            Refusal::JsonParse => {
                let detail = "We encountered an unspecified JSON parsing error.";
                problem(StatusCode::BAD_REQUEST, "JSON Parse Error", detail)
            }
            Refusal::NotFound => not_found(),
        }
    }
}

const ERROR_DOCS: &str = "https://mailchimp.com/developer/marketing/docs/errors/";

/// A problem+json answer.
pub(crate) fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    problem_with(status, title, detail, None)
}

/// A problem+json answer with Mailchimp's per-field `errors` list.
fn problem_with(status: StatusCode, title: &str, detail: &str, errors: Option<Value>) -> Response {
    let mut body = json!({
        "type": ERROR_DOCS,
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "instance": instance(),
    });
    if let Some(errors) = errors {
        body["errors"] = errors;
    }
    let content_type = [(
        header::CONTENT_TYPE,
        "application/problem+json; charset=utf-8",
    )];
    (status, content_type, body.to_string()).into_response()
}

/// A request id shaped like Mailchimp's (a UUID).
fn instance() -> String {
    let hex = random_hex(32);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

pub(crate) fn api_key_invalid() -> Response {
    let detail = "Your API key may be invalid, or you've attempted to access the wrong datacenter.";
    problem(StatusCode::UNAUTHORIZED, "API Key Invalid", detail)
}

pub(crate) fn not_found() -> Response {
    let detail = "The requested resource could not be found.";
    problem(StatusCode::NOT_FOUND, "Resource Not Found", detail)
}

pub(crate) fn method_not_allowed() -> Response {
    let detail = "The requested method and resource are not compatible.";
    problem(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", detail)
}

fn invalid_resource(detail: &str) -> Response {
    problem(StatusCode::BAD_REQUEST, "Invalid Resource", detail)
}

fn invalid_url() -> Response {
    let errors = json!([{ "field": "url", "message": "Invalid URL" }]);
    let detail = "The resource submitted could not be validated. For field-specific details, \
                  see the 'errors' array.";
    problem_with(
        StatusCode::BAD_REQUEST,
        "Invalid Resource",
        detail,
        Some(errors),
    )
}

pub(crate) fn too_many_connections(limit: usize) -> Response {
    let detail = format!("You have exceeded the limit of {limit} simultaneous connections.");
    problem(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests", &detail)
}

/// An injected failure: 502, 503 and 504 come from the CDN as HTML, anything else from the
/// API as problem+json.
pub(crate) fn injected(status: StatusCode) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    match status.as_u16() {
        502..=504 => html(status),
        429 => problem(
            status,
            title,
            "You have exceeded the limit of 10 simultaneous connections.",
        ),
        _ => problem(status, title, "An unexpected internal error has occurred."),
    }
}

/// What the CDN answers when it gives up on the API.
pub(crate) fn html(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    let body = format!(
        "<html><head><title>{code} {reason}</title></head>\
         <body><center><h1>{code} {reason}</h1></center></body></html>\n"
    );
    (status, [(header::CONTENT_TYPE, "text/html")], body).into_response()
}
