//! `/node`: this node's identity and, for admins, its size, its replicate/share rules in words,
//! its open uploads and its last GC (counts of everything would tell others about packages they may not see).

use axum::{
    extract::State,
    response::{Html, IntoResponse, Response},
};
use minijinja::context;

use super::{page_error::PageError, templates::render, viewer::Viewer};
use crate::{config::BlobMode, http::AppState};

/// A rule as a sentence, e.g. "Takes in acme-* from any origin, fetching bytes at once".
fn replicate_words(rule: &crate::config::ReplicateRule) -> String {
    let from = if rule.from == "*" {
        "any origin".to_owned()
    } else {
        format!("origin {}", rule.from)
    };
    let blobs = match rule.blobs {
        BlobMode::Eager => "fetching their bytes at once",
        BlobMode::Lazy => "fetching their bytes on first pull",
    };
    format!(
        "Takes in {} from {from}, {blobs}.",
        rule.packages.join(", ")
    )
}

fn share_words(rule: &crate::config::ShareRule) -> String {
    let to = if rule.to == "*" {
        "every peer".to_owned()
    } else {
        format!("peer {}", rule.to)
    };
    format!("Gives out {} to {to}.", rule.packages.join(", "))
}

pub async fn show(State(state): State<AppState>, viewer: Viewer) -> Result<Response, PageError> {
    let (packages, versions) = state.store.counts()?;
    let admin = viewer.is_admin();
    let rules: Vec<String> = if admin {
        state
            .config
            .replicate
            .iter()
            .map(replicate_words)
            .chain(state.config.share.iter().map(share_words))
            .collect()
    } else {
        Vec::new()
    };
    let storage = if admin {
        let state = state.clone();
        // A directory walk over every blob: off the async workers.
        match crate::offload::spawn(move || state.store.blobs().list()).await {
            Ok(Ok(files)) => Some(context! {
                blobs => files.len(),
                bytes => files.iter().map(|f| f.size).sum::<u64>(),
            }),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not measure the blob store");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not measure the blob store");
                None
            }
        }
    } else {
        None
    };
    let open_uploads = if admin {
        Some(state.store.uploads()?.len())
    } else {
        None
    };
    let body = render(
        "node.html",
        context! {
            viewer => viewer.template_context(&state),
            page => "node",
            peer_id => state.peer_id.clone(),
            origin => state.store.origin().to_string(),
            p2p_addrs => state.p2p.as_ref().map(|p| p.listen_addrs()).unwrap_or_default(),
            p2p => state.p2p.is_some(),
            version => env!("CARGO_PKG_VERSION"),
            packages,
            versions,
            anonymous_pull => state.config.anonymous_pull,
            admin,
            rules,
            open_uploads,
            storage,
            last_gc => state.last_gc.get().filter(|_| admin),
        },
    )?;
    Ok(Html(body).into_response())
}
