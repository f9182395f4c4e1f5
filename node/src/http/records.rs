//! The signed record log, in this node's order, filtered to what the key may pull. Mirrors
//! read it to copy packages with their original signatures.

use axum::{Json, extract::State};
use niso_protocol::{
    api::{ErrorBody, RecordPage},
    record::Record,
    scope::Action,
};
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
    #[param(format = "uint64", maximum = 18446744073709551615_u64)]
    after: u64,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// With nothing new after `after`, wait up to this many seconds for records to arrive
    /// before answering: a long poll for watching a registry. Values above 60 wait 60.
    #[serde(default)]
    #[param(format = "uint64", maximum = 18446744073709551615_u64)]
    wait: u64,
}

/// Records after a log position.
#[utoipa::path(get, path = "/v1/records", tag = "records", operation_id = "listRecords", params(RecordsQuery),
    responses(
        (status = 200, description = "Records after `after` that the key may pull, in log order", body = RecordPage),
        (status = 400, description = "A `limit` out of range, or a parameter that is not a number", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key may pull no package", body = ErrorBody),
    ))]
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
