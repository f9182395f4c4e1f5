//! The HTTP API: routes, middleware, and one module per area.

mod admin;
mod blobs;
mod bundles;
pub mod error;
mod extract;
mod keys;
pub mod openapi;
mod packages;
mod records;
pub mod server;
mod system;
mod tags;
mod uploads;

use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    middleware::{self, Next},
    response::Response,
    routing::{get, post, put},
};
use tower_http::trace::TraceLayer;

use crate::{
    NodeState,
    metrics::{self, RequestLabels},
};

pub use uploads::UPLOAD_OFFSET;

pub type AppState = Arc<NodeState>;

pub fn router(state: AppState) -> Router {
    let json_limit = state.config.limits.max_json_bytes;
    let api = Router::new()
        .route("/node", get(system::node_info))
        .route("/peers", get(system::peers))
        .route("/openapi.json", get(openapi::serve))
        .route("/whoami", get(system::whoami))
        .route("/packages", get(packages::list))
        .route("/packages/{name}", get(packages::detail))
        .route("/packages/{name}/resolve", get(packages::resolve_ref))
        .route(
            "/packages/{name}/versions/{version}",
            axum::routing::delete(packages::delete_version),
        )
        .route(
            "/packages/{name}/versions/{version}/{arch}",
            get(packages::version),
        )
        .route("/packages/{name}/tags", get(tags::list))
        .route(
            "/packages/{name}/tags/{tag}",
            put(tags::set).delete(tags::remove),
        )
        .route(
            "/packages/{name}/blobs/{digest}",
            get(blobs::get).head(blobs::head),
        )
        .route("/packages/{name}/uploads", post(uploads::create))
        .route("/uploads", get(uploads::list))
        .route(
            "/uploads/{id}",
            get(uploads::status)
                .patch(uploads::append)
                .put(uploads::finish)
                .delete(uploads::cancel),
        )
        .route("/records", get(records::list))
        .route("/keys", post(keys::create).get(keys::list))
        .route("/keys/{id}", axum::routing::delete(keys::revoke))
        .route("/gc", post(admin::gc))
        .route("/mirror", post(admin::mirror))
        .route("/export", get(bundles::export_bundle))
        .route("/import", post(bundles::import_bundle))
        .fallback(not_found);
    Router::new()
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .nest("/v1", api)
        .merge(crate::ui::router(&state))
        .fallback(not_found)
        // Buffered extractors (JSON) stop at this size; upload bodies stream and are checked
        // against the package limit instead.
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
            }),
        )
        .with_state(state)
}

async fn not_found() -> error::ApiError {
    error::ApiError::not_found("no such endpoint; the API is described at /v1/openapi.json")
}

async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = metrics::method_label(req.method());
    let response = next.run(req).await;
    if response.status() == axum::http::StatusCode::INSUFFICIENT_STORAGE {
        // Whichever route hit the full disk, `/healthz` says so until a write gets through.
        state.store.write_health().failed(
            crate::store::WritePart::Files,
            &crate::store::StoreError::NoSpace(std::io::Error::from(
                std::io::ErrorKind::StorageFull,
            )),
        );
    }
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
