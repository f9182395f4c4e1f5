//! `/peers` (admin): every peer this node knows, with its connection, latency and sync state,
//! and the blob fetches running now with their verified bytes.
//! The page is complete without JavaScript; `app.js` refreshes its table from
//! `/ui/peers.json` so it updates live.

use axum::{
    Json,
    extract::State,
    http::HeaderMap,
    response::{Html, IntoResponse, Response},
};
use minijinja::context;
use serde_json::json;

use super::{login, page_error::PageError, templates::render, viewer::Viewer};
use crate::{http::AppState, p2p::PeerInfo};

fn peers(state: &AppState) -> Vec<PeerInfo> {
    crate::replication::peer_report(state)
}

pub async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if let Some(sign_in) = login::admin_gate(&state, &viewer, &headers)? {
        return Ok(sign_in);
    }
    let body = render(
        "peers.html",
        context! {
            viewer => viewer.template_context(&state),
            page => "peers",
            p2p => state.p2p.is_some(),
            peers => peers(&state),
            fetches => state.fetcher.in_flight(),
        },
    )?;
    Ok(Html(body).into_response())
}

/// The table's data for the live refresh; the same admin check as the page.
pub async fn json(State(state): State<AppState>, viewer: Viewer) -> Result<Response, PageError> {
    if !viewer.is_admin() {
        return Err(PageError::Forbidden);
    }
    Ok(
        Json(json!({ "peers": peers(&state), "fetches": state.fetcher.in_flight() }))
            .into_response(),
    )
}
