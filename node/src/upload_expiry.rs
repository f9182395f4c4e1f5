//! Abandoned uploads: one that receives no bytes for `limits.upload_idle_timeout_secs` is
//! removed by a background sweep, so a client killed mid-push holds its key's upload slots
//! for no longer than that.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{NodeState, store::StoreError};

/// Sweeps for abandoned uploads until the task is aborted.
pub async fn run(state: Arc<NodeState>) {
    if let Some(ttl) = state.config.gc.upload_ttl_secs {
        tracing::warn!(
            upload_ttl_secs = ttl,
            "gc.upload_ttl_secs is no longer used; uploads expire after limits.upload_idle_timeout_secs without bytes"
        );
    }
    let mut tick = tokio::time::interval(sweep_interval(idle_timeout(&state)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep(&state).await {
            tracing::warn!(error = %e, "could not sweep abandoned uploads");
        }
    }
}

fn idle_timeout(state: &NodeState) -> Duration {
    Duration::from_secs(state.config.limits.upload_idle_timeout_secs)
}

/// A quarter of the timeout: an abandoned upload goes at most 1.25 × the timeout after its
/// last byte, without a busy node rescanning the table every few milliseconds.
fn sweep_interval(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(60))
}

/// Removes every upload idle past the timeout that no request is writing to, and files under
/// `uploads/` that no upload row accounts for. Returns how many uploads it removed.
pub async fn sweep(state: &NodeState) -> Result<usize, StoreError> {
    let idle = idle_timeout(state);
    let now = SystemTime::now();
    let rows = state.store.uploads()?;
    let mut removed = 0;
    for (id, entry) in &rows {
        let path = state.store.upload_path(id);
        let Some(idle_for) = crate::offload::io(move || idle_for(&path, now)).await? else {
            // The row outlived its file (a crash between the two): nothing to resume.
            if let Some(_lease) = state.lease_upload(id) {
                state.store.remove_upload(id.clone()).await?;
                removed += 1;
            }
            continue;
        };
        if idle_for < idle {
            continue;
        }
        // A request holding the lease is writing right now, so the upload is not abandoned.
        let Some(_lease) = state.lease_upload(id) else {
            continue;
        };
        state.store.remove_upload(id.clone()).await?;
        removed += 1;
        state.metrics.uploads_expired.inc();
        tracing::info!(
            upload = %id,
            package = %entry.name,
            key_id = entry.key_id.as_deref().unwrap_or("-"),
            idle_secs = idle_for.as_secs(),
            "removed abandoned upload"
        );
    }
    let dir = state.store.uploads_dir().to_owned();
    let known: HashSet<String> = rows.iter().map(|(id, _)| id.clone()).collect();
    crate::offload::io(move || remove_strays(&dir, &known, now, idle)).await?;
    Ok(removed)
}

/// Removes the files in `dir` that no upload row names and that have been idle for `idle`.
/// An upload opened after the rows were read has a brand-new file, which this spares.
fn remove_strays(
    dir: &std::path::Path,
    known: &HashSet<String>,
    now: SystemTime,
    idle: Duration,
) -> std::io::Result<()> {
    for file in std::fs::read_dir(dir)? {
        let file = file?;
        if known.contains(file.file_name().to_string_lossy().as_ref()) {
            continue;
        }
        if idle_for(&file.path(), now)?.is_some_and(|d| d >= idle) {
            match std::fs::remove_file(file.path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// How long since the file last changed, or `None` if it is gone.
fn idle_for(path: &std::path::Path, now: SystemTime) -> std::io::Result<Option<Duration>> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some(
            meta.modified()
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_often_enough_for_short_timeouts_and_not_too_often() {
        assert_eq!(
            sweep_interval(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(sweep_interval(Duration::ZERO), Duration::from_millis(250));
    }
}
