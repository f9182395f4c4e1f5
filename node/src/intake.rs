//! The one way records and blobs from elsewhere enter a node. Continuous replication, an
//! operator's mirror (libp2p or HTTP) and bundle import all hand their records to [`admit`],
//! which judges each the same way, in this order:
//!
//! 1. **known** — a record already in the log is a duplicate; nothing else happens.
//! 2. **signature** — the record must verify (fields and ed25519 signature) for its origin.
//! 3. **trust** — under [`Policy::Rules`] a `[[replicate]]` rule must accept (origin,
//!    package); an operator's explicit mirror ([`Policy::Operator`]) accepts every origin.
//! 4. **authority** — only the origin that holds a package name may publish, tag or delete
//!    under it, a name is held in one spelling, a version is never republished with other
//!    bytes (`store::apply` decides for good inside the write; a read-only pre-check spares
//!    fetching blobs for records that would be refused).
//! 5. **blob** — for a manifest whose bytes this node takes now, the source provides them;
//!    they must hash to the manifest's digest, pass every archive check, and their
//!    `niso.toml` must name the manifest's name, version and arch. The digest stays pinned
//!    from before the blob takes its name until after the record commits, so GC cannot
//!    remove it in between.
//! 6. **apply** — the admitted records of a batch are applied in one write transaction.
//! 7. **count** — every record ends with one [`Verdict`]; [`Outcome`] sums them, and the
//!    mirror, import and replication reports are views of it. Refusals are logged, counted
//!    in metrics by reason, and listed.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use niso_protocol::{
    Digest, PackageMeta,
    api::MirrorReport,
    archive::read_meta,
    record::{ManifestBody, Record, RecordBody},
};

use crate::{
    config::BlobMode,
    identity::peer_id,
    ingest::{Verified, store_blob, verify_file},
    node::NodeState,
    signatures::{Prechecked, verify_many},
    store::{Applied, ChangeError, Pin, StoreError},
};

/// Which trust rule judges the records of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Continuous replication and bundle import: the `[[replicate]]` rules decide, and a
    /// lazy rule takes records now and bytes on first pull.
    Rules,
    /// An operator's explicit `mirror`: every origin the source offers, blobs eagerly.
    /// Authority and every other check still apply.
    Operator,
}

/// How a blob reached the intake.
#[derive(Debug)]
pub enum Provided {
    /// Bytes in a temporary file, not yet checked.
    File(PathBuf),
    /// Bytes in a temporary file that the source already hashed and inspected.
    Checked(PathBuf, Box<Verified>),
    /// Already durable in the blob store under its digest (a verified libp2p fetch), with
    /// the `niso.toml` its check read when the source has it (then the blob is not read
    /// again to compare it with the manifest).
    Stored(Option<Arc<PackageMeta>>),
}

/// Why a source could not provide a blob.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Not obtainable now; the record stays unapplied and a later attempt retries it.
    #[error("blob not fetched yet: {0}")]
    Unavailable(String),
    /// The bytes offered are not what the manifest promises.
    #[error("{0}")]
    Bad(String),
}

/// Where the bytes of a batch's manifests come from.
pub trait BlobSource {
    fn provide(
        &mut self,
        state: &Arc<NodeState>,
        manifest: &ManifestBody,
    ) -> impl Future<Output = Result<Provided, BlobError>> + Send;

    /// The failpoint hit once a blob from this source is durable and before its record is
    /// applied (crash tests kill the node there).
    fn committed_failpoint(&self) -> &'static str {
        "intake-blob-committed"
    }
}

/// A source with no bytes to offer: only records whose blobs are already here (or lazily
/// replicated) can be admitted.
#[derive(Debug, Default)]
pub struct NoBlobs;

impl BlobSource for NoBlobs {
    async fn provide(
        &mut self,
        _state: &Arc<NodeState>,
        _manifest: &ManifestBody,
    ) -> Result<Provided, BlobError> {
        Err(BlobError::Unavailable(
            "this source carries no blobs".into(),
        ))
    }
}

/// The fixed set of reasons a record is refused; also the `reason` label of the
/// `records_refused` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Invalid,
    TooLarge,
    BadBlob,
    Deleted,
    Conflict,
    NotOwner,
    NameTaken,
    TagRollback,
    Equivocation,
    UnknownPackage,
    Other,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Self::Invalid,
        Self::TooLarge,
        Self::BadBlob,
        Self::Deleted,
        Self::Conflict,
        Self::NotOwner,
        Self::NameTaken,
        Self::TagRollback,
        Self::Equivocation,
        Self::UnknownPackage,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::TooLarge => "too_large",
            Self::BadBlob => "bad_blob",
            Self::Deleted => "deleted",
            Self::Conflict => "conflict",
            Self::NotOwner => "not_owner",
            Self::NameTaken => "name_taken",
            Self::TagRollback => "tag_rollback",
            Self::Equivocation => "equivocation",
            Self::UnknownPackage => "unknown_package",
            Self::Other => "other",
        }
    }

    fn of(e: &ChangeError) -> Self {
        match e {
            ChangeError::Conflict { .. } => Self::Conflict,
            ChangeError::Deleted { .. } => Self::Deleted,
            ChangeError::TagRollback { .. } => Self::TagRollback,
            ChangeError::Equivocation { .. } => Self::Equivocation,
            ChangeError::NotOwner { .. } => Self::NotOwner,
            ChangeError::NameTaken { .. } => Self::NameTaken,
            ChangeError::UnknownPackage { .. } => Self::UnknownPackage,
            ChangeError::Invalid(_) => Self::Invalid,
            ChangeError::NotFound(_) | ChangeError::Refused(_) | ChangeError::Store(_) => {
                Self::Other
            }
        }
    }

    /// Whether a well-behaved origin could have produced the record (late, early, or merely
    /// redundant) or somebody is trying something.
    pub fn is_hostile(self) -> bool {
        !matches!(self, Self::UnknownPackage | Self::TooLarge | Self::Other)
    }
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Now part of the log; `kind` is `manifest`, `tag` or `tombstone`.
    Applied {
        kind: &'static str,
    },
    Duplicate,
    /// No `[[replicate]]` rule accepts its origin and package.
    Untrusted,
    /// Left for a later attempt: its blob could not be obtained yet.
    Incomplete(String),
    Refused {
        reason: Reason,
        detail: String,
    },
}

/// A refused record, as reports list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    /// `KIND record ORIGIN#SEQ for PACKAGE: why`.
    pub message: String,
}

/// The sum of a batch's verdicts.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub seen: u64,
    pub applied: u64,
    pub versions: u64,
    pub tags: u64,
    pub deletions: u64,
    pub duplicates: u64,
    pub untrusted: u64,
    pub incomplete: u64,
    pub blobs: u64,
    pub bytes: u64,
    pub refused: Vec<Refusal>,
    /// Per record, in the order given (tests and callers that need more than counts).
    pub verdicts: Vec<Verdict>,
}

impl Outcome {
    pub fn merge(&mut self, other: Outcome) {
        self.seen += other.seen;
        self.applied += other.applied;
        self.versions += other.versions;
        self.tags += other.tags;
        self.deletions += other.deletions;
        self.duplicates += other.duplicates;
        self.untrusted += other.untrusted;
        self.incomplete += other.incomplete;
        self.blobs += other.blobs;
        self.bytes += other.bytes;
        self.refused.extend(other.refused);
        self.verdicts.extend(other.verdicts);
    }

    /// Records refused because they were malformed or badly signed: what a peer that relayed
    /// them is struck for.
    pub fn invalid(&self) -> usize {
        self.refused
            .iter()
            .filter(|r| r.reason == Reason::Invalid)
            .count()
    }

    pub fn refusal_messages(&self) -> Vec<String> {
        self.refused.iter().map(|r| r.message.clone()).collect()
    }

    pub fn mirror_report(&self, via: &str) -> MirrorReport {
        let mut rejected = self.refusal_messages();
        rejected.extend(self.verdicts.iter().filter_map(|v| match v {
            Verdict::Incomplete(why) => Some(why.clone()),
            _ => None,
        }));
        MirrorReport {
            via: via.to_owned(),
            records_seen: self.seen,
            records_applied: self.applied,
            versions: self.versions,
            tags: self.tags,
            deletions: self.deletions,
            blobs_fetched: self.blobs,
            bytes_fetched: self.bytes,
            skipped: self.duplicates,
            untrusted: self.untrusted,
            incomplete: self.incomplete,
            rejected,
            via_reason: String::new(),
            offered: String::new(),
        }
    }

    fn record(&mut self, state: &NodeState, record: &Record, verdict: Verdict) {
        match &verdict {
            Verdict::Applied { kind } => {
                self.applied += 1;
                state.metrics.records_applied.inc();
                match *kind {
                    "manifest" => self.versions += 1,
                    "tag" => self.tags += 1,
                    _ => self.deletions += 1,
                }
            }
            Verdict::Duplicate => self.duplicates += 1,
            Verdict::Untrusted => self.untrusted += 1,
            Verdict::Incomplete(_) => self.incomplete += 1,
            Verdict::Refused { reason, detail } => {
                state.metrics.records_rejected.inc();
                state.metrics.refused(reason.as_str());
                tracing::warn!(
                    security = reason.is_hostile(),
                    origin = %record.origin,
                    seq = record.seq,
                    package = %record.body.package(),
                    kind = record.body.kind(),
                    reason = reason.as_str(),
                    detail = detail.as_str(),
                    "refused a record"
                );
                self.refused.push(Refusal {
                    reason: *reason,
                    message: format!("{}: {detail}", describe(record)),
                });
            }
        }
        self.verdicts.push(verdict);
    }
}

/// `KIND record PEER#SEQ for PACKAGE`.
pub fn describe(record: &Record) -> String {
    format!(
        "{} record {}#{} for {}",
        record.body.kind(),
        peer_id(&record.origin),
        record.seq,
        record.body.package()
    )
}

/// A record that passed every check before the write, with the pin that keeps its blob.
struct Ready {
    index: usize,
    record: Record,
    _pin: Option<Pin>,
}

/// Judges and applies `records` (in order) under `policy`, taking blobs from `source`.
/// Only a storage failure of this node is an error; everything a record can do wrong is a
/// verdict.
pub async fn admit<S: BlobSource + Send>(
    state: &Arc<NodeState>,
    policy: Policy,
    records: Vec<Record>,
    source: &mut S,
) -> Result<Outcome, StoreError> {
    admit_prechecked(state, policy, records, &Prechecked::default(), source).await
}

/// [`admit`], taking the signature verdict from `prechecked` for the records it checked.
pub async fn admit_prechecked<S: BlobSource + Send>(
    state: &Arc<NodeState>,
    policy: Policy,
    records: Vec<Record>,
    prechecked: &Prechecked,
    source: &mut S,
) -> Result<Outcome, StoreError> {
    let mut verdicts: Vec<Option<Verdict>> = vec![None; records.len()];
    let mut ready: Vec<Ready> = Vec::new();
    // One attempt per blob per batch: two manifests never make two fetches of one digest.
    let mut blob_results: HashMap<Digest, Result<Option<Arc<PackageMeta>>, BlobFault>> =
        HashMap::new();
    let mut blobs = 0u64;
    let mut bytes = 0u64;
    let checks = check_all(state, policy, &records, prechecked).await?;
    for ((index, record), check) in records.iter().enumerate().zip(checks) {
        let judged = judge(state, record, check)?;
        let (blob_mode, verdict) = match judged {
            Judged::Done(v) => (None, Some(v)),
            Judged::Go(mode) => (Some(mode), None),
        };
        if let Some(v) = verdict {
            verdicts[index] = Some(v);
            continue;
        }
        let mut pin = None;
        if let RecordBody::Manifest(m) = &record.body {
            // Pinned before the bytes take their name, released after the record commits.
            pin = Some(state.store.blobs().pin(m.digest));
            let eager = blob_mode == Some(BlobMode::Eager);
            let have = state.store.blobs().contains(&m.digest);
            // First: are valid bytes for this digest durable here (fetching them if the rule
            // is eager)? Cached per digest, since that is a property of the bytes alone.
            // With it: whether they arrived in this batch, and their `niso.toml` if a check
            // on the way in read it.
            let durable = match blob_results.get(&m.digest) {
                Some(r) => Some(r.clone().map(|meta| (false, meta))),
                None if have => Some(Ok((false, None))),
                None if eager => {
                    let r = take_blob(state, source, m).await;
                    blob_results.insert(m.digest, r.clone());
                    Some(r.map(|meta| (true, meta)))
                }
                // Lazy: the record now, the bytes (and their check) on first pull.
                None => None,
            };
            // Then, for every manifest on its own: are those bytes the package it names?
            let checked = match durable {
                None => Ok(false),
                Some(Err(fault)) => Err(fault),
                Some(Ok((fetched, Some(meta)))) => matches_manifest(m, &meta)
                    .map(|()| fetched)
                    .map_err(BlobFault::Bad),
                Some(Ok((fetched, None))) => check_stored(state, m).await.map(|()| fetched),
            };
            match checked {
                Ok(true) => {
                    blobs += 1;
                    bytes += m.size;
                }
                Ok(false) => {}
                Err(fault) => {
                    verdicts[index] = Some(fault.verdict());
                    continue;
                }
            }
        }
        ready.push(Ready {
            index,
            record: record.clone(),
            _pin: pin,
        });
    }

    // Every admitted record of the batch in one transaction; pins drop after the commit.
    let batch: Vec<Record> = ready.iter().map(|r| r.record.clone()).collect();
    if !batch.is_empty() {
        let results = state.store.apply_batch(batch).await?;
        for (r, result) in ready.iter().zip(results) {
            verdicts[r.index] = Some(match result {
                Ok(Applied::Stored) => Verdict::Applied {
                    kind: r.record.body.kind(),
                },
                Ok(Applied::Duplicate) => Verdict::Duplicate,
                Err(ChangeError::Store(e)) => return Err(e),
                Err(e) => Verdict::Refused {
                    reason: Reason::of(&e),
                    detail: e.to_string(),
                },
            });
        }
    }
    drop(ready);

    let mut out = Outcome {
        blobs,
        bytes,
        ..Outcome::default()
    };
    for (record, verdict) in records.iter().zip(verdicts) {
        out.seen += 1;
        let verdict = verdict.unwrap_or_else(|| Verdict::Refused {
            reason: Reason::Other,
            detail: "not judged".into(),
        });
        out.record(state, record, verdict);
    }
    Ok(out)
}

enum Judged {
    Done(Verdict),
    Go(BlobMode),
}

/// What [`check_all`] found out about one record.
enum Check {
    /// This exact record is held already: nothing else to check.
    Held,
    /// Its fields and signature hold, but the replicate rules take nothing of its origin's
    /// for its package: the rules are not asked.
    Untrusted,
    /// Its fields and signature hold; how its blob is taken, and what the rules say about it
    /// now.
    Valid {
        mode: BlobMode,
        rule: Result<(), ChangeError>,
    },
    Invalid(String),
}

/// Steps 1–2 for a whole batch: which records are held already, whether the others' fields
/// and signatures hold (unless `prechecked` has the verdict already), and what the rules say
/// about those that do and that `policy` takes from their origin. The reads are one
/// transaction each for the whole batch.
async fn check_all(
    state: &Arc<NodeState>,
    policy: Policy,
    records: &[Record],
    prechecked: &Prechecked,
) -> Result<Vec<Check>, StoreError> {
    // `None`: fields and signature hold so far; the rules are asked below.
    let mut checks: Vec<Option<Check>> = Vec::with_capacity(records.len());
    let mut fresh = Vec::new();
    let held = state.store.holds_exact_all(records)?;
    for ((i, record), held) in records.iter().enumerate().zip(held) {
        // A different record under a held (origin, seq) is equivocation: the rules say so.
        if held {
            checks.push(Some(Check::Held));
        } else {
            match prechecked.verdict(record) {
                Some(Ok(())) => checks.push(None),
                Some(Err(detail)) => checks.push(Some(Check::Invalid(detail.clone()))),
                None => {
                    checks.push(None);
                    fresh.push(i);
                }
            }
        }
    }
    let verdicts = verify_many(state, fresh.iter().map(|&i| records[i].clone()).collect()).await;
    for (&i, verdict) in fresh.iter().zip(verdicts) {
        if let Some(detail) = verdict {
            checks[i] = Some(Check::Invalid(detail));
        }
    }
    // Trust after the signature, so a forgery is refused as one whoever it claims to be
    // from; before the rules, which read the database, so a peer offering much this node does
    // not take costs no reads for it.
    let mut modes: Vec<Option<BlobMode>> = vec![None; records.len()];
    for ((record, check), mode) in records.iter().zip(checks.iter_mut()).zip(&mut modes) {
        if check.is_none() {
            *mode = blob_mode(state, policy, record);
            if mode.is_none() {
                *check = Some(Check::Untrusted);
            }
        }
    }
    let asked: Vec<&Record> = records
        .iter()
        .zip(&checks)
        .filter(|(_, check)| check.is_none())
        .map(|(record, _)| record)
        .collect();
    // One answer per record asked, in order; should one ever be missing, the record is
    // refused as "other", which counts against no peer.
    let mut rules = state.store.precheck_all(&asked)?.into_iter();
    Ok(checks
        .into_iter()
        .zip(modes)
        .map(|(check, mode)| match (check, mode) {
            (Some(check), _) => check,
            (None, Some(mode)) => Check::Valid {
                mode,
                rule: rules
                    .next()
                    .unwrap_or_else(|| Err(ChangeError::Refused("not judged".into()))),
            },
            // Every record left unchecked above has a mode.
            (None, None) => Check::Untrusted,
        })
        .collect())
}

/// How `policy` takes `record`'s blob: an operator's mirror eagerly, the replicate rules as
/// they say for its origin and package; `None` when they take nothing of it.
fn blob_mode(state: &NodeState, policy: Policy, record: &Record) -> Option<BlobMode> {
    match policy {
        Policy::Operator => Some(BlobMode::Eager),
        Policy::Rules => state
            .trust
            .accepts(&peer_id(&record.origin), record.body.package().as_str()),
    }
}

/// Steps 1–4: everything decided without bytes.
fn judge(state: &NodeState, record: &Record, check: Check) -> Result<Judged, StoreError> {
    let (mode, rule) = match check {
        Check::Held => return Ok(Judged::Done(Verdict::Duplicate)),
        Check::Untrusted => return Ok(Judged::Done(Verdict::Untrusted)),
        Check::Invalid(detail) => {
            return Ok(Judged::Done(Verdict::Refused {
                reason: Reason::Invalid,
                detail,
            }));
        }
        Check::Valid { mode, rule } => (mode, rule),
    };
    if let RecordBody::Manifest(m) = &record.body
        && m.size > state.config.limits.max_package_bytes
    {
        return Ok(Judged::Done(Verdict::Refused {
            reason: Reason::TooLarge,
            detail: format!(
                "{} bytes is more than this node accepts ({})",
                m.size, state.config.limits.max_package_bytes
            ),
        }));
    }
    match rule {
        // The manifest may come earlier in this very batch; `apply` decides.
        Ok(()) | Err(ChangeError::UnknownPackage { .. }) => Ok(Judged::Go(mode)),
        Err(ChangeError::Store(e)) => Err(e),
        Err(e) => Ok(Judged::Done(Verdict::Refused {
            reason: Reason::of(&e),
            detail: e.to_string(),
        })),
    }
}

/// Why a manifest's bytes were not taken: worth retrying later, or a refusal.
#[derive(Debug, Clone)]
enum BlobFault {
    Retry(String),
    Bad(String),
}

impl BlobFault {
    fn verdict(self) -> Verdict {
        match self {
            Self::Retry(why) => Verdict::Incomplete(why),
            Self::Bad(detail) => Verdict::Refused {
                reason: Reason::BadBlob,
                detail,
            },
        }
    }
}

/// Gets a manifest's bytes from `source` and makes them durable; returns their `niso.toml`
/// when the source or this check read it.
async fn take_blob<S: BlobSource + Send>(
    state: &Arc<NodeState>,
    source: &mut S,
    m: &ManifestBody,
) -> Result<Option<Arc<PackageMeta>>, BlobFault> {
    let provided = match source.provide(state, m).await {
        Ok(p) => p,
        Err(BlobError::Unavailable(why)) => {
            return Err(BlobFault::Retry(format!("blob not fetched yet: {why}")));
        }
        Err(BlobError::Bad(why)) => return Err(BlobFault::Bad(why)),
    };
    let (file, verified) = match provided {
        // The fetcher hashed and inspected the bytes before they took their name.
        Provided::Stored(meta) => return Ok(meta),
        Provided::Checked(file, verified) => (file, *verified),
        Provided::File(file) => {
            let limits = state.config.archive_limits();
            let check = file.clone();
            let verified = crate::offload::spawn(move || verify_file(&check, &limits))
                .await
                .map_err(|e| BlobFault::Retry(format!("could not check the blob: {e}")))?;
            match verified {
                Ok(v) => (file, v),
                Err(e) => {
                    let _ = crate::offload::remove_file(&file).await;
                    return Err(BlobFault::Bad(format!(
                        "the blob is not a valid package: {}",
                        crate::http::error::chain(&e)
                    )));
                }
            }
        }
    };
    if verified.digest != m.digest {
        let _ = crate::offload::remove_file(&file).await;
        return Err(BlobFault::Bad(format!(
            "the blob hashes to {}, the manifest names {}",
            verified.digest, m.digest
        )));
    }
    // Valid bytes under their digest may be stored even if this manifest turns out not to
    // be their package: another manifest in the batch may be, and GC sweeps them otherwise.
    store_blob(&state.store, file, m.digest)
        .await
        .map_err(|e| BlobFault::Retry(format!("could not store the blob: {e}")))?;
    state.failpoints.hit(source.committed_failpoint(), 0).await;
    Ok(Some(Arc::new(verified.meta)))
}

/// A blob in the store passed every archive check when it entered; what is left is whether
/// it is the package this manifest names (its first entry, so this reads little).
async fn check_stored(state: &NodeState, m: &ManifestBody) -> Result<(), BlobFault> {
    let path = state.store.blobs().path(&m.digest);
    let meta = crate::offload::spawn(move || {
        let file = std::fs::File::open(&path)
            .map_err(|e| BlobFault::Retry(format!("could not read the blob: {e}")))?;
        read_meta(std::io::BufReader::new(file))
            .map_err(|e| BlobFault::Bad(format!("the blob is not a valid package: {e}")))
    })
    .await
    .map_err(|e| BlobFault::Retry(format!("could not check the blob: {e}")))??;
    matches_manifest(m, &meta).map_err(BlobFault::Bad)
}

/// The bytes must be the manifest's package: a `niso.toml` with its name, version and arch.
pub fn matches_manifest(m: &ManifestBody, meta: &niso_protocol::PackageMeta) -> Result<(), String> {
    if meta.name != m.name || meta.version != m.version || meta.arch != m.arch {
        return Err(format!(
            "the blob holds {} {} ({}), the manifest names {} {} ({})",
            meta.name, meta.version, meta.arch, m.name, m.version, m.arch
        ));
    }
    Ok(())
}
