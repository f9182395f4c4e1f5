//! The signed record log, in this node's order, filtered to what the key may pull. Mirrors
//! read it to copy packages with their original signatures.

use axum::{Json, extract::State};
use niso_protocol::{api::RecordPage, record::Record, scope::Action};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{
    AppState,
    error::ApiError,
    extract::{ApiQuery, Auth},
    packages::check_limit,
};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordsQuery {
    /// Log position to continue after (`next` of the previous page); 0 to start.
    #[serde(default)]
    after: u64,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<usize>,
    /// With nothing new after `after`, wait up to this many seconds (at most 60) for records
    /// to arrive before answering: a long poll for watching a registry.
    #[serde(default)]
    wait: u64,
}

/// Records after a log position.
#[utoipa::path(get, path = "/v1/records", tag = "records", params(RecordsQuery),
    responses((status = 200, body = RecordPage), (status = 401, body = niso_protocol::api::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiQuery(query): ApiQuery<RecordsQuery>,
) -> Result<Json<RecordPage>, ApiError> {
    if !principal.scopes.has_any(Action::Pull) {
        principal.require(Action::Pull, "*")?;
    }
    let limit = check_limit(query.limit)?;
    let allow = |package: &str| principal.scopes.allows(Action::Pull, package);
    let filter = |r: &Record| allow(r.body.package().as_str());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(query.wait.min(60));
    let mut log = state.store.watch_log();
    let mut after = query.after;
    let (records, next, more) = loop {
        // A key that may see a few packages reads them through the per-package index: the cost
        // follows what it may see, and `next` never moves over what it may not.
        let (records, next, more) = match state.store.records_of(after, limit, &allow)? {
            Some(page) => page,
            None => state
                .store
                .records_after(after, limit, limit * 20, &filter)?,
        };
        if !records.is_empty() || more || tokio::time::Instant::now() >= deadline {
            break (records, next, more);
        }
        after = next;
        if tokio::time::timeout_at(deadline, log.changed())
            .await
            .is_err()
        {
            break (records, next, more);
        }
    };
    Ok(Json(RecordPage {
        records,
        next,
        more,
    }))
}
