//! The OpenAPI document, generated from the handlers' annotations and served at
//! `/v1/openapi.json`. A copy is checked in as `docs/openapi.json`; a test keeps them equal.

use axum::{Json, response::IntoResponse};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

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
        serve,
        packages::list,
        packages::detail,
        packages::resolve_ref,
        packages::version,
        packages::delete_version,
        tags::list,
        tags::set,
        tags::remove,
        blobs::get,
        blobs::head,
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
    // Path parameters' schemas are referenced, not collected: name them here.
    components(schemas(
        niso_protocol::PackageName,
        niso_protocol::api_schema::VersionString,
        niso_protocol::api_schema::TagName,
        niso_protocol::Arch,
        niso_protocol::Digest,
        niso_protocol::api_schema::KeyId,
        niso_protocol::api_schema::UploadId,
        niso_protocol::api_schema::ScopeString,
        niso_protocol::api_schema::KeyName,
        niso_protocol::api_schema::Bytes,
    )),
    modifiers(&BearerKey),
    security(("apiKey" = [])),
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

/// The one way to authenticate, named by every operation that needs it.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("niso_k1_…")
                    .description(Some(
                        "An API key, `Authorization: Bearer niso_k1_…`. A node started with `--anonymous-pull` lets requests without one read what `pull:*` allows.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as pretty JSON, exactly as checked in.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned())
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "node", operation_id = "getApiDocument", security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object, content_type = "application/json")))]
pub async fn serve() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
