//! Record signature checks for a batch: on blocking threads, one share per core, when the
//! batch is large; and ahead of the intake ([`Prechecked`]) for a sync page that waits behind
//! the one being written, so checking page N + 1 overlaps with writing page N.

use std::{collections::HashSet, sync::Arc};

use niso_protocol::{
    Digest,
    record::{OriginKeys, Record, RecordError},
};

use crate::node::NodeState;

/// Below this many records to check, one thread checks them all.
const PARALLEL_CHECKS: usize = 64;

/// Checks each record's fields and signature; `None` where it holds, else why not. Signatures
/// are most of a sync page's CPU and independent of each other, so a large batch is spread
/// over blocking threads.
pub async fn verify_many(state: &Arc<NodeState>, records: Vec<Record>) -> Vec<Option<String>> {
    if records.len() < PARALLEL_CHECKS {
        let mut keys = OriginKeys::default();
        return records
            .iter()
            .map(|r| verify(state, r, &mut keys).err().map(|e| e.to_string()))
            .collect();
    }
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let share = records.len().div_ceil(cores);
    let total = records.len();
    let mut tasks = Vec::new();
    let mut records = records.into_iter();
    loop {
        let part: Vec<Record> = records.by_ref().take(share).collect();
        if part.is_empty() {
            break;
        }
        let state = state.clone();
        let len = part.len();
        let task = tokio::task::spawn_blocking(move || {
            let mut keys = OriginKeys::default();
            part.iter()
                .map(|r| verify(&state, r, &mut keys).err().map(|e| e.to_string()))
                .collect::<Vec<_>>()
        });
        tasks.push((task, len));
    }
    let mut out = Vec::with_capacity(total);
    for (task, len) in tasks {
        // A check that panicked proves nothing: its records count as invalid.
        match task.await {
            Ok(part) => out.extend(part),
            Err(e) => out.extend(std::iter::repeat_n(
                Some(format!("signature check failed: {e}")),
                len,
            )),
        }
    }
    out
}

/// Checks a record's fields and signature, unless a deliberately broken test node skips it.
pub fn verify(
    state: &NodeState,
    record: &Record,
    keys: &mut OriginKeys,
) -> Result<(), RecordError> {
    #[cfg(feature = "fault-injection")]
    if state.config.faults.skip_signature_checks {
        return Ok(());
    }
    let _ = state;
    record.verify_with(keys)
}

/// Records whose fields and signature were found valid ahead of the intake, by id. An id is
/// blake3 of the record's wire bytes, signature included, so it vouches for those exact bytes
/// and nothing else; a record that failed is simply not here, and the intake checks it again
/// (and refuses it with the reason).
#[derive(Debug, Default)]
pub struct Prechecked(HashSet<Digest>);

impl Prechecked {
    /// Checks `records` that this node does not hold yet (one already held is a duplicate,
    /// which the intake sees without a signature check).
    pub async fn check(state: &Arc<NodeState>, records: &[Record]) -> Self {
        let fresh: Vec<Record> = records
            .iter()
            .filter(|r| !state.store.holds_exact(r).unwrap_or(false))
            .cloned()
            .collect();
        let ids: Vec<Digest> = fresh.iter().map(Record::id).collect();
        let verdicts = verify_many(state, fresh).await;
        Self(
            ids.into_iter()
                .zip(verdicts)
                .filter_map(|(id, fault)| fault.is_none().then_some(id))
                .collect(),
        )
    }

    /// Whether `record`, these very bytes, was found valid.
    pub fn vouches_for(&self, record: &Record) -> bool {
        !self.0.is_empty() && self.0.contains(&record.id())
    }
}
