//! Completes the generated OpenAPI document with the refusals every route can give, so a
//! generated client (and schemathesis) knows every status it may see: each is an RFC 9457
//! problem served as `application/problem+json`.
//!
//! - every `/v1` operation: 401 (no or unknown key), 403 (another role's key), 422 (a path or
//!   query parameter, or a body field, refused), 408 (the body did not arrive in time), 500
//!   and 503 (the log cannot be read, or a bound such as the live tails or the requests in
//!   flight of the route's kind is full);
//! - with a path parameter: 404;
//! - with a body: 400 (not JSON), 413 (too large), 415 (not `application/json`);
//! - a change (POST, PUT, DELETE): 409 (a rule of the resource refuses it, a conflict, an
//!   `Idempotency-Key` still being processed);
//! - with `If-Match`: 412;
//! - `/metrics`: 500 and 503.

use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder};

use crate::problem::PROBLEM_JSON;

fn problem(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

/// The problems `op` at `path` can answer, as (status, description).
fn refusals(path: &str, method: &str, op: &Operation) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if path == "/metrics" {
        out.push(("500", "The server could not complete the request"));
        out.push(("503", "The log cannot be read"));
    }
    if !path.starts_with("/v1/") {
        return out;
    }
    out.extend([
        ("401", "Missing or unknown API key"),
        ("403", "The key's role may not do this"),
        (
            "408",
            "The request body did not arrive within the body read timeout",
        ),
        ("422", "A parameter or field is refused; `field` names it"),
        ("500", "The server could not complete the request"),
        (
            "503",
            "The log cannot be read at a position, or a bound (live tails, requests in flight \
             of this kind) is full; retry after Retry-After",
        ),
    ]);
    if path.contains('{') {
        out.push(("404", "No such resource"));
    }
    if op.request_body.is_some() {
        out.push(("400", "The body is not valid JSON"));
        out.push(("413", "The body is too large"));
        out.push(("415", "The body is not application/json"));
    }
    if method != "get" {
        out.push((
            "409",
            "A rule refuses the change (a closed account, a removed extension, a number \
             taken), a conflict a retry resolves, or an Idempotency-Key still being processed",
        ));
    }
    let has_if_match = op
        .parameters
        .iter()
        .flatten()
        .any(|p| p.name.eq_ignore_ascii_case("If-Match"));
    if has_if_match {
        out.push(("412", "If-Match names an older version"));
    }
    out
}

/// Problem responses the handlers declared as JSON are served as problem+json.
fn problem_content_type(response: &mut RefOr<Response>) {
    let RefOr::T(r) = response else { return };
    let is_problem = r.content.get("application/json").is_some_and(
        |c| matches!(&c.schema, Some(RefOr::Ref(s)) if s.ref_location.ends_with("/Problem")),
    );
    if is_problem && let Some(content) = r.content.shift_remove("application/json") {
        r.content.insert(PROBLEM_JSON.to_owned(), content);
    }
}

/// Adds the refusals to every operation of `doc`.
pub fn document_refusals(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            for response in op.responses.responses.values_mut() {
                problem_content_type(response);
            }
            for (status, description) in refusals(path, method, op) {
                op.responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| problem(description));
            }
        }
    }
}
