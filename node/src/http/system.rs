//! Node-level endpoints: health, metrics, node identity, and who the caller is.

use axum::{
    Json,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use niso_protocol::api::{NodeInfo, WhoAmI};

use super::{AppState, error::ApiError, extract::Auth};

/// Health: `ok` while the node serves requests and its writes work; 503 `degraded: …` while
/// writes fail (a full disk), though reads are still served.
#[utoipa::path(get, path = "/healthz", tag = "node",
    responses(
        (status = 200, description = "The node is up", body = String),
        (status = 503, description = "Degraded: writes are failing, and why", body = String)))]
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
#[utoipa::path(get, path = "/metrics", tag = "node",
    responses((status = 200, description = "Metrics", body = String)))]
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
#[utoipa::path(get, path = "/v1/node", tag = "node",
    responses((status = 200, description = "Node information", body = NodeInfo)))]
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
#[utoipa::path(get, path = "/v1/whoami", tag = "keys",
    responses(
        (status = 200, description = "The caller", body = WhoAmI),
        (status = 401, description = "No valid key", body = niso_protocol::api::ErrorBody),
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
#[utoipa::path(get, path = "/v1/peers", tag = "node",
    responses(
        (status = 200, body = Vec<crate::p2p::PeerInfo>),
        (status = 403, body = niso_protocol::api::ErrorBody),
    ))]
pub async fn peers(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Json<Vec<crate::p2p::PeerInfo>>, ApiError> {
    principal.require_admin()?;
    Ok(Json(
        state.p2p.as_ref().map(|p| p.peers()).unwrap_or_default(),
    ))
}
