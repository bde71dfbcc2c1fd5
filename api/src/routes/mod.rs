//! One module per resource. Helpers shared by all of them: parsing ids and numbers from the
//! request, ETags, 201 responses, and lists as JSON pages or CSV.

pub mod accounts;
pub mod audit;
pub mod billing;
pub mod devices;
pub mod extensions;
pub mod health;
pub mod intents;
pub mod numbers;
pub mod tariffs;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::E164;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::problem::{ApiError, ApiResult};

/// Parses a UUID from a path or body field.
pub fn parse_uuid(text: &str, field: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(text).map_err(|_| ApiError::invalid(field, format!("{text:?} is not a UUID")))
}

/// Parses an E.164 number (`+` and 8 to 15 digits) from a field.
/// The fewest digits a number the API takes may have: a country code and the shortest
/// subscriber numbers in service (e.g. +290 and four digits for St Helena).
pub const MIN_E164_DIGITS: usize = 7;

/// A telephone number given to the API: E.164, and a whole number (`+1` or `+44` alone are
/// country codes, not numbers).
pub fn parse_e164(text: &str, field: &str) -> ApiResult<E164> {
    let number = E164::parse(text).map_err(|e| ApiError::invalid(field, e.to_string()))?;
    if number.digits().len() < MIN_E164_DIGITS {
        return Err(ApiError::invalid(
            field,
            format!(
                "{text:?} is too short for a telephone number (at least {MIN_E164_DIGITS} digits)"
            ),
        ));
    }
    Ok(number)
}

pub fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// 200 with the resource and its stream version as ETag.
pub fn versioned<T: Serialize>(version: u64, body: T) -> Response {
    let mut r = Json(body).into_response();
    r.headers_mut().insert(header::ETAG, etag(version));
    r
}

/// 201 with `Location` and ETag.
pub fn created<T: Serialize>(location: String, version: u64, body: T) -> Response {
    let mut r = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut().insert(header::ETAG, etag(version));
    r
}

/// A page of a keyset-paginated list: pass `next` back as `after` for the following page.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The cursor of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Rows per page unless `limit` says otherwise, and the most a page holds.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// Cuts `items` (fetched with one row more than `limit`) to a page, with the cursor of the
/// next page when there is one.
pub fn paginate<T>(mut items: Vec<T>, limit: usize, cursor: impl Fn(&T) -> String) -> Page<T> {
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor)
    } else {
        None
    };
    Page { items, next }
}

pub fn page_limit(limit: Option<usize>) -> ApiResult<usize> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        )),
    }
}

pub(crate) fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with("text/csv")))
}

fn csv_cell(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => csv_text(s),
        Some(other) => other.to_string(),
    }
}

/// A text cell of RFC 4180 CSV. Text a spreadsheet would run as a formula (starting with `=`,
/// `+`, `-`, `@`, a tab or a carriage return) gets a leading `'`, except a plain number or an
/// E.164 number (`+` and digits), which no spreadsheet runs.
pub fn csv_text(text: &str) -> String {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let number = text.parse::<f64>().is_ok()
        || text
            .strip_prefix('+')
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    let text = if formula && !number {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// RFC 4180 CSV of `rows`, one column per name in `columns` (a row's JSON field of that name).
pub fn to_csv<T: Serialize>(columns: &[&str], rows: &[T]) -> String {
    let mut out = columns.join(",");
    out.push_str("\r\n");
    for row in rows {
        let value = serde_json::to_value(row).unwrap_or_default();
        let cells: Vec<String> = columns.iter().map(|c| csv_cell(value.get(*c))).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// A list as JSON (`Page`) or, when the caller accepts `text/csv`, as CSV with the next
/// page's cursor in `X-Next-Cursor`.
pub fn list_response<T: Serialize>(
    headers: &HeaderMap,
    columns: &[&str],
    page: Page<T>,
) -> Response {
    if !wants_csv(headers) {
        return Json(page).into_response();
    }
    let mut r = (
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        to_csv(columns, &page.items),
    )
        .into_response();
    if let Some(next) = page.next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        r.headers_mut().insert("x-next-cursor", next);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Row {
        a: &'static str,
        b: Option<i64>,
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let rows = [
            Row {
                a: "x,y",
                b: Some(3),
            },
            Row {
                a: "say \"hi\"",
                b: None,
            },
        ];
        assert_eq!(
            to_csv(&["a", "b"], &rows),
            "a,b\r\n\"x,y\",3\r\n\"say \"\"hi\"\"\",\r\n"
        );
    }

    #[test]
    fn formulas_are_text_numbers_stay_numbers() {
        assert_eq!(csv_text("=1+2"), "'=1+2");
        assert_eq!(csv_text("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(
            csv_text("-2+3+cmd|' /C calc'!A0"),
            "'-2+3+cmd|' /C calc'!A0"
        );
        assert_eq!(csv_text("+441632960001"), "+441632960001");
        assert_eq!(csv_text("-12.5"), "-12.5");
        assert_eq!(csv_text("=A1,B1"), "\"'=A1,B1\"");
        assert_eq!(csv_text("plain"), "plain");
    }
}
