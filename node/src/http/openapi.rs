//! The OpenAPI document, generated from the handlers' annotations and served at
//! `/v1/openapi.json`. A copy is checked in as `docs/openapi.json`; a test keeps them equal.

use axum::{Json, response::IntoResponse};
use utoipa::OpenApi;

use super::{admin, blobs, bundles, keys, packages, records, system, tags, uploads};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "niso registry",
        description = "Push, pull, search and manage niso packages. Authenticate with `Authorization: Bearer <api-key>`. Every error is `{\"error\":{\"code\",\"message\"}}`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        system::healthz,
        system::metrics,
        system::node_info,
        system::whoami,
        system::peers,
        packages::list,
        packages::detail,
        packages::resolve_ref,
        packages::version,
        packages::delete_version,
        tags::list,
        tags::set,
        tags::remove,
        blobs::get,
        uploads::create,
        uploads::list,
        uploads::status,
        uploads::append,
        uploads::finish,
        uploads::cancel,
        records::list,
        keys::create,
        keys::list,
        keys::revoke,
        admin::gc,
        admin::mirror,
        bundles::export_bundle,
        bundles::import_bundle,
    ),
    tags(
        (name = "node", description = "Health, metrics and identity"),
        (name = "packages", description = "Listing, search, resolution and deletion"),
        (name = "tags", description = "Mutable pointers to versions"),
        (name = "blobs", description = "Package downloads"),
        (name = "uploads", description = "Resumable pushes"),
        (name = "records", description = "The signed change log"),
        (name = "keys", description = "API keys and scopes"),
        (name = "admin", description = "Garbage collection and mirroring"),
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON, exactly as checked in.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned())
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "node",
    responses((status = 200, description = "This document", content_type = "application/json")))]
pub async fn serve() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
