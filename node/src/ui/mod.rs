//! The web UI: server-rendered pages beside the API, for people with a browser. Every page
//! shows only what the viewer's key may pull, the same scope checks as the API's; nothing is
//! loaded from outside the node.

mod assets;
mod form;
mod keys;
mod login;
mod node_page;
mod packages;
mod page_error;
mod peers;
mod reference;
mod security_headers;
mod session_cookie;
pub mod sessions;
mod templates;
mod units;
mod viewer;

use axum::{
    Router, middleware,
    routing::{get, post},
};

use crate::http::AppState;

pub use sessions::Sessions;

/// The UI's routes, or none when `[ui] enabled = false` (its paths then answer 404 like any
/// unknown path).
pub fn router(state: &AppState) -> Router<AppState> {
    if !state.config.ui.enabled {
        return Router::new();
    }
    Router::new()
        .route("/", get(packages::list))
        .route("/packages/{name}", get(packages::detail))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/node", get(node_page::show))
        .route("/peers", get(peers::show))
        .route("/ui/peers.json", get(peers::json))
        .route("/keys", get(keys::list).post(keys::create))
        .route("/keys/{id}/revoke", post(keys::revoke))
        .route("/api", get(reference::show))
        .route("/ui/style.css", get(assets::style))
        .route("/ui/app.js", get(assets::script))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            session_cookie::renew,
        ))
        .layer(middleware::map_response(security_headers::add))
}
