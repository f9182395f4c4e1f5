//! Record signature checks for a batch: on blocking threads, one share per core, when the
//! batch is large; and ahead of the intake ([`Prechecked`]) for a sync page that waits behind
//! the one being written, so checking page N + 1 overlaps with writing page N.

use std::{collections::HashMap, sync::Arc};

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
        let task = crate::offload::spawn(move || {
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
fn verify(state: &NodeState, record: &Record, keys: &mut OriginKeys) -> Result<(), RecordError> {
    #[cfg(feature = "fault-injection")]
    if state.config.faults.skip_signature_checks {
        return Ok(());
    }
    let _ = state;
    record.verify_with(keys)
}

/// Signature checks done ahead of the intake, by record id. An id is blake3 of the record's
/// wire bytes, signature included, so a verdict holds for those exact bytes and nothing else;
/// the intake checks any record not here itself. Failures are kept too, so a page of forgeries
/// costs one check per record, not two.
#[derive(Debug, Default)]
pub struct Prechecked(HashMap<Digest, Result<(), String>>);

impl Prechecked {
    /// Checks `records` that this node does not hold yet (one already held is a duplicate,
    /// which the intake sees without a signature check).
    pub async fn check(state: &Arc<NodeState>, records: &[Record]) -> Self {
        let held = state
            .store
            .holds_exact_all(records)
            .unwrap_or_else(|_| vec![false; records.len()]);
        let fresh: Vec<Record> = records
            .iter()
            .zip(held)
            .filter(|(_, held)| !held)
            .map(|(r, _)| r.clone())
            .collect();
        let ids: Vec<Digest> = fresh.iter().map(Record::id).collect();
        let verdicts = verify_many(state, fresh).await;
        Self(
            ids.into_iter()
                .zip(verdicts)
                .map(|(id, fault)| (id, fault.map_or(Ok(()), Err)))
                .collect(),
        )
    }

    /// The verdict on `record`, these very bytes, if it was checked: `Ok` where its fields and
    /// signature hold, else why not.
    pub fn verdict(&self, record: &Record) -> Option<&Result<(), String>> {
        if self.0.is_empty() {
            return None;
        }
        self.0.get(&record.id())
    }
}
