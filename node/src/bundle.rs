//! Air-gapped transfer: a bundle file of signed records and the blobs they reference.
//!
//! Layout (an uncompressed tar; blobs are already compressed):
//!
//! ```text
//! niso-bundle.json   {"format":"niso-bundle-v1","source":PEER_ID,"since":N,"mark":M,...}
//! records.bin        [u32 BE length][record bytes]…
//! blobs/<hex>        one file per blob a manifest in the bundle references
//! ```
//!
//! Import checks the container first: a bundle whose structure, counts or blob bytes are wrong
//! is rejected whole. Its records then go through the node's one intake (signature, trust
//! rules, authority, blob against manifest), each with its own verdict in the report.

use std::{
    collections::{HashMap, HashSet},
    io::{self, Read, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

pub use niso_protocol::api::{BundleHeader, ImportReport};
use niso_protocol::{
    Digest,
    record::{ManifestBody, Record, RecordBody},
};
use serde::{Deserialize, Serialize};

use crate::{
    identity::peer_id,
    ingest::{Verified as Checked, verify_file},
    intake::{BlobError, BlobSource, Policy, Provided, admit},
    node::NodeState,
    store::{Pin, StoreError},
};

pub const FORMAT: &str = "niso-bundle-v2";
const HEADER: &str = "niso-bundle.json";
const RECORDS: &str = "records.bin";
/// Always the last entry; see [`BundleTrailer`].
pub const TRAILER: &str = "niso-bundle-end.json";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the bundle is not valid: {0}")]
    Invalid(String),
    #[error("the bundle failed verification: {0}")]
    Tampered(String),
    #[error("could not read or write the bundle")]
    Io(#[from] io::Error),
    #[error("blob {digest} of {package} cannot be exported: {why}")]
    MissingBlob {
        package: String,
        digest: Digest,
        why: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    pub since: u64,
    pub packages: Vec<globset::GlobMatcher>,
}

impl ExportFilter {
    fn allows(&self, record: &Record) -> bool {
        self.packages.is_empty()
            || self
                .packages
                .iter()
                .any(|g| g.is_match(record.body.package().as_str()))
    }
}

/// What an export will write, decided before any byte is streamed.
#[derive(Debug)]
pub struct ExportPlan {
    pub header: BundleHeader,
    records: Vec<Record>,
    /// Each blob once: digest, a package that references it (for fetching), size.
    blobs: Vec<(Digest, String, u64)>,
}

/// Chooses the records (and so the blobs) of a bundle.
pub fn plan(state: &NodeState, filter: &ExportFilter) -> Result<ExportPlan, BundleError> {
    let mut records = Vec::new();
    let mut after = filter.since;
    let mut mark = filter.since;
    loop {
        let (page, last, more) =
            state
                .store
                .records_after(after, 1000, 10_000, &|r: &Record| filter.allows(r))?;
        records.extend(page);
        mark = mark.max(last);
        if !more {
            break;
        }
        after = last;
    }
    let mut blobs = Vec::new();
    let mut seen = HashSet::new();
    for r in &records {
        if let RecordBody::Manifest(m) = &r.body
            && seen.insert(m.digest)
        {
            blobs.push((m.digest, m.name.to_string(), m.size));
        }
    }
    let header = BundleHeader {
        format: FORMAT.to_owned(),
        source: peer_id(&state.store.origin()),
        since: filter.since,
        mark,
        records: records.len() as u64,
        blobs: blobs.len() as u64,
    };
    Ok(ExportPlan {
        header,
        records,
        blobs,
    })
}

/// Makes every blob of the plan present and pinned before streaming starts: a lazily
/// replicated one is fetched from peers, and one that cannot be had fails the export here,
/// while it can still be answered with an error instead of a short bundle.
pub async fn gather(state: &Arc<NodeState>, plan: &ExportPlan) -> Result<Vec<Pin>, BundleError> {
    let mut pins = Vec::with_capacity(plan.blobs.len());
    for (digest, package, size) in &plan.blobs {
        pins.push(state.store.blobs().pin(*digest));
        if state.store.blobs().contains(digest) {
            continue;
        }
        if state.p2p.is_none() {
            return Err(BundleError::MissingBlob {
                package: package.clone(),
                digest: *digest,
                why: "it is not on this node and this node has no peers to fetch it from".into(),
            });
        }
        state
            .fetcher
            .fetch(state, package, *digest, *size, Vec::new())
            .await
            .map_err(|why| BundleError::MissingBlob {
                package: package.clone(),
                digest: *digest,
                why: format!("this node replicates it lazily and could not fetch it: {why}"),
            })?;
    }
    Ok(pins)
}

/// Writes the planned bundle to `out` (blocking), ending with the trailer.
pub fn write(state: &NodeState, plan: &ExportPlan, out: impl Write) -> Result<(), BundleError> {
    let mut tar = tar::Builder::new(out);
    let append = |tar: &mut tar::Builder<_>, path: &str, size: u64, data: &mut dyn Read| {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        tar.append_data(&mut h, path, data)
    };
    let json =
        serde_json::to_vec_pretty(&plan.header).map_err(|e| BundleError::Invalid(e.to_string()))?;
    append(&mut tar, HEADER, json.len() as u64, &mut &json[..])?;
    let mut encoded = Vec::new();
    for r in &plan.records {
        let bytes = r.to_bytes();
        encoded.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        encoded.extend_from_slice(&bytes);
    }
    append(&mut tar, RECORDS, encoded.len() as u64, &mut &encoded[..])?;
    let mut sealed = Seal::new(&encoded, plan.records.len() as u64);
    for (d, _, _) in &plan.blobs {
        let mut f = std::fs::File::open(state.store.blobs().path(d))?;
        let size = f.metadata()?.len();
        append(&mut tar, &format!("blobs/{}", d.hex()), size, &mut f)?;
        sealed.blob(d);
    }
    let trailer =
        serde_json::to_vec(&sealed.trailer()).map_err(|e| BundleError::Invalid(e.to_string()))?;
    append(&mut tar, TRAILER, trailer.len() as u64, &mut &trailer[..])?;
    tar.into_inner()?.flush()?;
    Ok(())
}

/// The last entry of a bundle: what came before it, so a bundle cut at an entry boundary
/// (which still reads as a valid tar) is known to be short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleTrailer {
    pub records: u64,
    pub blobs: u64,
    /// blake3 over `records.bin` followed by each blob's digest in bundle order.
    pub digest: Digest,
}

/// Accumulates a trailer while a bundle is written or read.
struct Seal {
    hasher: blake3::Hasher,
    records: u64,
    blobs: u64,
}

impl Seal {
    fn new(records_bin: &[u8], records: u64) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(records_bin);
        Self {
            hasher,
            records,
            blobs: 0,
        }
    }

    fn blob(&mut self, digest: &Digest) {
        self.hasher.update(digest.as_bytes());
        self.blobs += 1;
    }

    fn trailer(&self) -> BundleTrailer {
        BundleTrailer {
            records: self.records,
            blobs: self.blobs,
            digest: self.hasher.finalize().into(),
        }
    }
}

/// Checks the bundle as a container (format, counts, every blob hashes to its name and is a
/// valid package: any failure here rejects the bundle whole), then hands its records to the
/// intake like any other source, with the bundle's blobs as the bytes.
pub async fn import(state: &Arc<NodeState>, bundle: PathBuf) -> Result<ImportReport, BundleError> {
    let blob_dir = state.store.blobs().temp_path("import")?;
    std::fs::create_dir_all(&blob_dir)?;
    let result = import_inner(state, &bundle, &blob_dir).await;
    let _ = std::fs::remove_dir_all(&blob_dir);
    result
}

async fn import_inner(
    state: &Arc<NodeState>,
    bundle: &Path,
    blob_dir: &Path,
) -> Result<ImportReport, BundleError> {
    let limits = state.config.archive_limits();
    let (header, records, blobs) = {
        let bundle = bundle.to_owned();
        let blob_dir = blob_dir.to_owned();
        crate::offload::spawn(move || read_and_verify(&bundle, &blob_dir, &limits))
            .await
            .map_err(|e| BundleError::Io(io::Error::other(e)))??
    };
    let outcome = admit(state, Policy::Rules, records, &mut BundleBlobs { blobs }).await?;
    Ok(ImportReport {
        source: header.source,
        mark: header.mark,
        records_applied: outcome.applied,
        versions: outcome.versions,
        tags: outcome.tags,
        deletions: outcome.deletions,
        blobs: outcome.blobs,
        bytes: outcome.bytes,
        duplicates: outcome.duplicates,
        untrusted: outcome.untrusted,
        refused: outcome.refusal_messages(),
    })
}

/// The bundle's own blobs, already hashed and inspected while the bundle was read.
struct BundleBlobs {
    blobs: HashMap<Digest, (PathBuf, Checked)>,
}

impl BlobSource for BundleBlobs {
    async fn provide(
        &mut self,
        _state: &Arc<NodeState>,
        m: &ManifestBody,
    ) -> Result<Provided, BlobError> {
        match self.blobs.remove(&m.digest) {
            Some((path, checked)) => Ok(Provided::Checked(path, Box::new(checked))),
            None => Err(BlobError::Bad(format!(
                "the bundle lacks blob {} of this manifest",
                m.digest
            ))),
        }
    }
}

type Verified = (
    BundleHeader,
    Vec<Record>,
    HashMap<Digest, (PathBuf, Checked)>,
);

fn read_and_verify(
    bundle: &Path,
    blob_dir: &Path,
    limits: &niso_protocol::archive::ArchiveLimits,
) -> Result<Verified, BundleError> {
    let file = std::fs::File::open(bundle)?;
    let mut tar = tar::Archive::new(io::BufReader::with_capacity(1 << 20, file));
    let mut header: Option<BundleHeader> = None;
    let mut records: Option<Vec<Record>> = None;
    let mut seal: Option<Seal> = None;
    let mut trailer: Option<BundleTrailer> = None;
    let mut blobs = HashMap::new();
    for entry in tar
        .entries()
        .map_err(|e| BundleError::Invalid(e.to_string()))?
    {
        let mut entry = entry.map_err(|e| BundleError::Invalid(e.to_string()))?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if trailer.is_some() {
            return Err(BundleError::Invalid(format!(
                "`{path}` follows {TRAILER}, which must be the last entry"
            )));
        }
        match path.as_str() {
            HEADER => {
                let mut text = Vec::new();
                (&mut entry).take(64 * 1024).read_to_end(&mut text)?;
                let h: BundleHeader = serde_json::from_slice(&text)
                    .map_err(|e| BundleError::Invalid(format!("bad header: {e}")))?;
                if h.format != FORMAT {
                    return Err(BundleError::Invalid(format!(
                        "unknown bundle format `{}` (this node reads {FORMAT}); export it again with this version",
                        h.format
                    )));
                }
                header = Some(h);
            }
            RECORDS => {
                let mut bytes = Vec::new();
                (&mut entry)
                    .take(256 * 1024 * 1024)
                    .read_to_end(&mut bytes)?;
                let decoded = decode_records(&bytes)?;
                seal = Some(Seal::new(&bytes, decoded.len() as u64));
                records = Some(decoded);
            }
            TRAILER => {
                let mut text = Vec::new();
                (&mut entry).take(64 * 1024).read_to_end(&mut text)?;
                trailer = Some(
                    serde_json::from_slice(&text)
                        .map_err(|e| BundleError::Invalid(format!("bad trailer: {e}")))?,
                );
            }
            p => {
                let Some(hex) = p.strip_prefix("blobs/") else {
                    return Err(BundleError::Invalid(format!("unexpected entry `{p}`")));
                };
                let digest = Digest::from_hex(hex).ok_or_else(|| {
                    BundleError::Invalid(format!("`{p}` is not named by a digest"))
                })?;
                let dest = blob_dir.join(hex);
                let mut out = std::fs::File::create(&dest)?;
                io::copy(&mut entry, &mut out)?;
                out.sync_all()?;
                let verified = verify_file(&dest, limits).map_err(|e| {
                    BundleError::Tampered(format!(
                        "blob {digest}: {}",
                        crate::http::error::chain(&e)
                    ))
                })?;
                if verified.digest != digest {
                    return Err(BundleError::Tampered(format!(
                        "blob named {digest} hashes to {}",
                        verified.digest
                    )));
                }
                if let Some(seal) = &mut seal {
                    seal.blob(&digest);
                }
                blobs.insert(digest, (dest, verified));
            }
        }
    }
    let header = header.ok_or_else(|| BundleError::Invalid("missing niso-bundle.json".into()))?;
    let records = records.ok_or_else(|| BundleError::Invalid("missing records.bin".into()))?;
    if records.len() as u64 != header.records {
        return Err(BundleError::Tampered(format!(
            "header promises {} records, found {}",
            header.records,
            records.len()
        )));
    }
    let trailer = trailer.ok_or_else(|| {
        BundleError::Invalid(format!(
            "the bundle ends without {TRAILER}: it is truncated (copy it again, or export it again)"
        ))
    })?;
    let sealed = seal.map(|s| s.trailer());
    if sealed.as_ref() != Some(&trailer) || trailer.blobs != header.blobs {
        return Err(BundleError::Tampered(format!(
            "the bundle's contents do not match its trailer (header: {} records, {} blobs; trailer: {} records, {} blobs)",
            header.records, header.blobs, trailer.records, trailer.blobs
        )));
    }
    Ok((header, records, blobs))
}

fn decode_records(bytes: &[u8]) -> Result<Vec<Record>, BundleError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(BundleError::Tampered("truncated record list".into()));
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let body = rest
            .get(4..4 + len)
            .ok_or_else(|| BundleError::Tampered("truncated record".into()))?;
        // Signatures are the intake's to check, record by record, as on every other path.
        let record = Record::parse_unverified(body)
            .map_err(|e| BundleError::Tampered(format!("record {}: {e}", out.len() + 1)))?;
        out.push(record);
        rest = &rest[4 + len..];
    }
    Ok(out)
}
