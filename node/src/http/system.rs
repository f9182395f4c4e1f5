//! Node-level endpoints: health, metrics, node identity, and who the caller is.

use axum::{
    Json,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use niso_protocol::api::{ErrorBody, NodeInfo, PeerInfo, WhoAmI};

use super::{AppState, error::ApiError, extract::Auth};

/// Health: `ok` while the node serves requests and its writes work; 503 `degraded: …` while
/// writes fail (a full disk), though reads are still served.
#[utoipa::path(get, path = "/healthz", tag = "node", operation_id = "getHealth", security(()),
    responses(
        (status = 200, description = "The node is up: `ok`", body = String, content_type = "text/plain"),
        (status = 503, description = "Degraded: writes are failing, and why", body = String, content_type = "text/plain")))]
pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.write_health().failing() {
        None => "ok\n".into_response(),
        Some(reason) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("degraded: writes are failing: {reason}\n"),
        )
            .into_response(),
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "node", operation_id = "getMetrics", security(()),
    responses((status = 200, description = "Metrics in the OpenMetrics text format", body = String, content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.refresh_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// The node's identity and size. Needs no key.
#[utoipa::path(get, path = "/v1/node", tag = "node", operation_id = "getNodeInfo", security(()),
    responses(
        (status = 200, description = "Node information", body = NodeInfo),
        (status = 500, description = "The node could not read its store; its log says why", body = ErrorBody),
    ))]
pub async fn node_info(State(state): State<AppState>) -> Result<Json<NodeInfo>, ApiError> {
    let (packages, versions) = state.store.counts()?;
    Ok(Json(NodeInfo {
        peer_id: state.peer_id.clone(),
        p2p_addrs: state
            .p2p
            .as_ref()
            .map(|p| p.listen_addrs())
            .unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        origin: state.store.origin().to_string(),
        packages,
        versions,
        anonymous_pull: state.config.anonymous_pull,
    }))
}

/// The key making the request and its scopes.
#[utoipa::path(get, path = "/v1/whoami", tag = "keys", operation_id = "whoAmI",
    responses(
        (status = 200, description = "The caller: its key and scopes (none for anonymous access)", body = WhoAmI),
        (status = 401, description = "No valid key (and the node allows no anonymous pulls)", body = ErrorBody),
    ))]
pub async fn whoami(Auth(principal): Auth) -> Json<WhoAmI> {
    Json(WhoAmI {
        key_id: principal.key_id,
        name: principal.key_name,
        scopes: principal
            .scopes
            .list()
            .iter()
            .map(ToString::to_string)
            .collect(),
    })
}

/// Peers this node knows: addresses, latency, sync state, strikes.
#[utoipa::path(get, path = "/v1/peers", tag = "node", operation_id = "listPeers",
    responses(
        (status = 200, description = "Every peer this node knows, by peer id (empty while p2p is off)", body = Vec<PeerInfo>),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key is not an admin key", body = ErrorBody),
    ))]
pub async fn peers(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Json<Vec<PeerInfo>>, ApiError> {
    principal.require_admin()?;
    Ok(Json(crate::replication::peer_report(&state)))
}
