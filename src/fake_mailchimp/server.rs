//! The HTTP face: routes under `/3.0`, the gate every request passes (traffic count, fault
//! injection, API key), and the audience and member listings.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};
use tokio_stream::wrappers::ReceiverStream;

use super::audience::{Filter, Order};
use super::fields::{Selection, write_entry};
use super::member::{Member, MemberView, stamp};
use super::problem::{self, Refusal, not_found};
use super::{List, LoggedRequest, Shared, lock, webhooks};

/// The largest page Mailchimp serves; larger `count`s are quietly capped.
const MAX_COUNT: u64 = 1000;
const DEFAULT_COUNT: u64 = 10;
const STATUSES: [&str; 6] = [
    "subscribed",
    "unsubscribed",
    "cleaned",
    "pending",
    "transactional",
    "archived",
];

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/lists", get(lists))
        .route("/lists/{list_id}", get(list))
        .route("/lists/{list_id}/members", get(members))
        .route("/lists/{list_id}/members/{subscriber_hash}", get(member))
        .route(
            "/lists/{list_id}/webhooks",
            get(webhooks::list).post(webhooks::create),
        )
        .route(
            "/lists/{list_id}/webhooks/{webhook_id}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        );
    Router::new()
        .nest("/3.0", api)
        .fallback(|| async { not_found() })
        .method_not_allowed_fallback(|| async { problem::method_not_allowed() })
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), gate))
        .with_state(shared)
}

/// Counts the request in flight, applies the injected faults, checks the key, and logs the
/// answer.
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let uri = request
        .uri()
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    let (in_flight, count) = shared.traffic.enter();
    let response = admit(&shared, count, request, next).await;
    drop(in_flight);
    let status = response.status().as_u16();
    lock(&shared.requests).push(LoggedRequest {
        method,
        uri,
        status,
    });
    response
}

async fn admit(shared: &Shared, in_flight: usize, request: Request, next: Next) -> Response {
    if let Some(limit) = shared
        .faults
        .concurrency_limit()
        .filter(|limit| in_flight > *limit)
    {
        return problem::too_many_connections(limit);
    }
    let delay = shared.faults.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = shared.faults.take_failure() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return problem::injected(status);
    }
    if !authorized(&shared.api_key, request.headers()) {
        return problem::api_key_invalid();
    }
    next.run(request).await
}

/// HTTP Basic with any user name and the key as password, or `Bearer <key>`.
fn authorized(api_key: &str, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, credentials)) = value.trim().split_once(' ') else {
        return false;
    };
    let credentials = credentials.trim();
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" => credentials == api_key,
        "basic" => basic_password(credentials).is_some_and(|password| password == api_key),
        _ => false,
    }
}

fn basic_password(credentials: &str) -> Option<String> {
    let decoded = String::from_utf8(STANDARD.decode(credentials).ok()?).ok()?;
    decoded
        .split_once(':')
        .map(|(_, password)| password.to_owned())
}

/// Query parameters, decoded with form rules: an unencoded `+` arrives as a space, as it
/// does at Mailchimp.
struct Params(HashMap<String, String>);

impl Params {
    fn parse(query: Option<&str>) -> Params {
        let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes());
        Params(pairs.into_owned().collect())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    fn number(&self, name: &str, default: u64) -> Result<u64, Refusal> {
        let Some(text) = self.get(name) else {
            return Ok(default);
        };
        let invalid = |_| Refusal::Invalid(format!("The value for '{name}' must be a number."));
        text.trim().parse().map_err(invalid)
    }

    /// `count`, capped at 1000 without complaint; and the count asked for.
    fn count(&self) -> Result<(u64, u64), Refusal> {
        let asked = self.number("count", DEFAULT_COUNT)?;
        Ok((asked.min(MAX_COUNT), asked))
    }

    fn selection(&self) -> Selection<'_> {
        Selection::new(self.get("fields"), self.get("exclude_fields"))
    }
}

async fn lists(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> Result<Response, Refusal> {
    let params = Params::parse(query.as_deref());
    let (count, _) = params.count()?;
    let offset = params.number("offset", 0)?;
    let (shown, total) = {
        let lists = lock(&shared.lists);
        let page = lists.iter().skip(to_usize(offset)).take(to_usize(count));
        (page.map(list_json).collect::<Vec<_>>(), lists.len())
    };
    let body = json!({ "lists": shown, "total_items": total, "constraints": {}, "_links": [] });
    let narrowed = params.selection().apply(body).unwrap_or_default();
    Ok(json_response(StatusCode::OK, &narrowed))
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Path(list_id): Path<String>,
) -> Result<Response, Refusal> {
    let body = shared.with_list(&list_id, |list| list_json(list));
    Ok(json_response(
        StatusCode::OK,
        &body.ok_or(Refusal::NotFound)?,
    ))
}

fn list_json(list: &List) -> Value {
    let count = |status: &str| {
        let filter = Filter {
            status: Some(status.to_owned()),
            ..Filter::default()
        };
        list.audience.count(&filter)
    };
    json!({
        "id": list.id,
        "web_id": list.web_id,
        "name": list.name,
        "date_created": stamp(list.date_created),
        "double_optin": false,
        "stats": {
            "member_count": count("subscribed"),
            "unsubscribe_count": count("unsubscribed"),
            "cleaned_count": count("cleaned"),
            "total_contacts": list.audience.count(&Filter::default()),
        },
        "_links": [],
    })
}

/// What a members listing asks for.
struct MembersQuery {
    filter: Filter,
    order: Order,
    offset: u64,
    count: u64,
    asked: u64,
}

async fn members(
    State(shared): State<Arc<Shared>>,
    Path(list_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, Refusal> {
    let params = Params::parse(query.as_deref());
    let query = members_query(&params)?;
    if query.asked >= MAX_COUNT && shared.faults.gateway_timeout_on_full_pages() {
        return Ok(problem::html(StatusCode::GATEWAY_TIMEOUT));
    }
    let page = shared.with_list(&list_id, |list| {
        list.audience
            .page(&query.filter, query.order, query.offset, query.count)
    });
    let (members, total) = page.ok_or(Refusal::NotFound)?;
    let selection = params.selection();
    let page = MembersPage {
        members: &members,
        list_id: &list_id,
        total,
        selection: &selection,
    };
    let bytes = Bytes::from(serde_json::to_vec(&page).unwrap_or_default());
    if shared.faults.cut_this_listing() {
        return Ok(cut_short(bytes));
    }
    Ok(json_bytes(StatusCode::OK, bytes))
}

/// A members listing, written straight from the members.
struct MembersPage<'a, 'q> {
    members: &'a [Member],
    list_id: &'a str,
    total: u64,
    selection: &'a Selection<'q>,
}

impl Serialize for MembersPage<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some(selection) = self.selection.child("members") {
            let view = |member| MemberView {
                member,
                list_id: self.list_id,
                selection: &selection,
            };
            let members: Vec<MemberView> = self.members.iter().map(view).collect();
            map.serialize_entry("members", &members)?;
        }
        write_entry(&mut map, self.selection, "list_id", self.list_id)?;
        write_entry(&mut map, self.selection, "total_items", &self.total)?;
        write_entry(&mut map, self.selection, "_links", &[] as &[Value])?;
        map.end()
    }
}

fn members_query(params: &Params) -> Result<MembersQuery, Refusal> {
    let (count, asked) = params.count()?;
    let offset = params.number("offset", 0)?;
    let status = match params.get("status") {
        None => None,
        Some(status) if STATUSES.contains(&status) => Some(status.to_owned()),
        Some(status) => {
            let allowed = STATUSES.join(", ");
            let detail = format!("The value '{status}' for 'status' is not one of: {allowed}.");
            return Err(Refusal::Invalid(detail));
        }
    };
    let since = time_param(params, "since_last_changed")?;
    let before = time_param(params, "before_last_changed")?;
    let filter = Filter {
        status,
        since,
        before,
    };
    Ok(MembersQuery {
        filter,
        order: order(params)?,
        offset,
        count,
        asked,
    })
}

/// An ISO 8601 time filter. Mailchimp reads only the wall-clock part: the offset is
/// ignored (`10:00-02:00` means 10:00 UTC), and a value with fractional seconds is
/// ignored altogether, the filter matching everything. Both are reproduced here so that a
/// client that does not send whole-second UTC times finds out in its tests.
fn time_param(params: &Params, name: &str) -> Result<Option<DateTime<Utc>>, Refusal> {
    let Some(text) = params.get(name) else {
        return Ok(None);
    };
    let unreadable = |_| Refusal::Invalid(format!("The value for '{name}' must be a date-time."));
    let wall_clock = DateTime::parse_from_rfc3339(text)
        .map(|at| at.naive_local())
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
        .map_err(unreadable)?;
    let whole_seconds = wall_clock.and_utc().timestamp_subsec_nanos() == 0;
    Ok(whole_seconds.then(|| wall_clock.and_utc()))
}

fn order(params: &Params) -> Result<Order, Refusal> {
    let descending = match params
        .get("sort_dir")
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(_) => return Err(Refusal::Invalid("sort_dir must be ASC or DESC.".to_owned())),
    };
    match params.get("sort_field") {
        None => Ok(Order::Insertion),
        Some("last_changed") => Ok(Order::LastChanged { descending }),
        Some(other) => {
            let detail = format!("This fake sorts by last_changed only, not by '{other}'.");
            Err(Refusal::Invalid(detail))
        }
    }
}

async fn member(
    State(shared): State<Arc<Shared>>,
    Path((list_id, hash)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    let found = shared.with_list(&list_id, |list| {
        // Like Mailchimp, the path segment may be the subscriber hash or the address itself.
        let by_address = list
            .audience
            .find(&hash)
            .and_then(|pos| list.audience.get(pos));
        by_address.or_else(|| list.audience.find_by_hash(&hash.to_ascii_lowercase()))
    });
    let member = found.flatten().ok_or(Refusal::NotFound)?;
    Ok(json_response(StatusCode::OK, &member.to_json(&list_id)))
}

/// Headers and the first half of the body, then the connection closes. The pause lets the
/// first half reach the client before the error ends the connection.
fn cut_short(bytes: Bytes) -> Response {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let half = bytes.slice(..bytes.len() / 2);
    tokio::spawn(async move {
        let _ = sender.send(Ok(half)).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let cut = std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "cut by fault injection",
        );
        let _ = sender.send(Err(cut)).await;
    });
    let body = Body::from_stream(ReceiverStream::new(receiver));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response {
    json_bytes(status, Bytes::from(value.to_string()))
}

fn json_bytes(status: StatusCode, bytes: Bytes) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        bytes,
    )
        .into_response()
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}
