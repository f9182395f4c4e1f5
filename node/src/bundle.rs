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
//! Import verifies everything (every signature, every digest, every archive, the trust rules)
//! before any of it becomes visible; any signature or digest failure rejects the bundle whole.

use std::{
    collections::{HashMap, HashSet},
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use niso_protocol::{
    Digest,
    record::{Record, RecordBody},
};
use serde::{Deserialize, Serialize};

use crate::{
    identity::peer_id,
    ingest::verify_file,
    node::NodeState,
    store::{Applied, ChangeError, StoreError},
};

pub const FORMAT: &str = "niso-bundle-v1";
const HEADER: &str = "niso-bundle.json";
const RECORDS: &str = "records.bin";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleHeader {
    pub format: String,
    /// Peer id of the node that wrote the bundle.
    pub source: String,
    /// Log position the bundle starts after (0 for a full export).
    pub since: u64,
    /// Log position it ends at: pass as `--since` for the next incremental export.
    pub mark: u64,
    pub records: u64,
    pub blobs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the bundle is not valid: {0}")]
    Invalid(String),
    #[error("the bundle failed verification: {0}")]
    Tampered(String),
    #[error("could not read or write the bundle")]
    Io(#[from] io::Error),
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

/// Writes a bundle to `out` (blocking).
pub fn export(
    state: &NodeState,
    filter: &ExportFilter,
    out: impl Write,
) -> Result<BundleHeader, BundleError> {
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
    let mut blobs: Vec<Digest> = Vec::new();
    let mut seen = HashSet::new();
    for r in &records {
        if let RecordBody::Manifest(m) = &r.body
            && seen.insert(m.digest)
        {
            blobs.push(m.digest);
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
    let mut tar = tar::Builder::new(out);
    let append = |tar: &mut tar::Builder<_>, path: &str, size: u64, data: &mut dyn Read| {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        tar.append_data(&mut h, path, data)
    };
    let json =
        serde_json::to_vec_pretty(&header).map_err(|e| BundleError::Invalid(e.to_string()))?;
    append(&mut tar, HEADER, json.len() as u64, &mut &json[..])?;
    let mut encoded = Vec::new();
    for r in &records {
        let bytes = r.to_bytes();
        encoded.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        encoded.extend_from_slice(&bytes);
    }
    append(&mut tar, RECORDS, encoded.len() as u64, &mut &encoded[..])?;
    for d in &blobs {
        let mut f = std::fs::File::open(state.store.blobs().path(d))?;
        let size = f.metadata()?.len();
        append(&mut tar, &format!("blobs/{}", d.hex()), size, &mut f)?;
    }
    tar.into_inner()?.flush()?;
    Ok(header)
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportReport {
    pub source: String,
    pub mark: u64,
    pub records_applied: u64,
    pub versions: u64,
    pub tags: u64,
    pub deletions: u64,
    pub blobs: u64,
    pub bytes: u64,
    /// Records already held.
    pub duplicates: u64,
    /// Records no `[[replicate]]` rule accepts.
    pub untrusted: u64,
    /// Records refused by the log's rules (conflicts, rollbacks), each with the reason.
    pub refused: Vec<String>,
}

/// Verifies a bundle file completely, then applies it. Blocking parts run on the caller's
/// blocking thread; applying goes through the writer.
pub async fn import(state: &NodeState, bundle: PathBuf) -> Result<ImportReport, BundleError> {
    let blob_dir = state.store.blobs().temp_path("import")?;
    std::fs::create_dir_all(&blob_dir)?;
    let result = import_inner(state, &bundle, &blob_dir).await;
    let _ = std::fs::remove_dir_all(&blob_dir);
    result
}

async fn import_inner(
    state: &NodeState,
    bundle: &Path,
    blob_dir: &Path,
) -> Result<ImportReport, BundleError> {
    let limits = state.config.archive_limits();
    let (header, records, blobs) = {
        let bundle = bundle.to_owned();
        let blob_dir = blob_dir.to_owned();
        tokio::task::spawn_blocking(move || read_and_verify(&bundle, &blob_dir, &limits))
            .await
            .map_err(|e| BundleError::Io(io::Error::other(e)))??
    };
    // Every manifest's blob must be in the bundle or already here, and match the manifest.
    for r in &records {
        if let RecordBody::Manifest(m) = &r.body {
            match blobs.get(&m.digest) {
                Some((_, meta)) => {
                    if meta.name != m.name || meta.version != m.version || meta.arch != m.arch {
                        return Err(BundleError::Tampered(format!(
                            "blob {} holds {} {} ({}), not {} {} ({})",
                            m.digest, meta.name, meta.version, meta.arch, m.name, m.version, m.arch
                        )));
                    }
                }
                None if state.store.blobs().contains(&m.digest) => {}
                None => {
                    return Err(BundleError::Tampered(format!(
                        "the manifest for {} {} references blob {} which the bundle lacks",
                        m.name, m.version, m.digest
                    )));
                }
            }
        }
    }
    let mut report = ImportReport {
        source: header.source.clone(),
        mark: header.mark,
        ..ImportReport::default()
    };
    let mut accepted = Vec::new();
    for r in records {
        let origin = peer_id(&r.origin);
        if state
            .trust
            .accepts(&origin, r.body.package().as_str())
            .is_none()
        {
            report.untrusted += 1;
            continue;
        }
        accepted.push(r);
    }
    // Blobs first, so no applied record ever names a blob that is not durable here.
    let mut pins = Vec::new();
    for r in &accepted {
        if let RecordBody::Manifest(m) = &r.body {
            if let Some((path, _)) = blobs.get(&m.digest) {
                if path.exists() {
                    let size = std::fs::metadata(path)?.len();
                    pins.push(
                        crate::ingest::store_blob(&state.store, path.clone(), m.digest).await?,
                    );
                    report.blobs += 1;
                    report.bytes += size;
                }
            } else {
                pins.push(state.store.blobs().pin(m.digest));
            }
        }
    }
    let kinds: Vec<&'static str> = accepted.iter().map(|r| r.body.kind()).collect();
    let described: Vec<String> = accepted
        .iter()
        .map(|r| {
            format!(
                "{} record {}#{} for {}",
                r.body.kind(),
                r.origin,
                r.seq,
                r.body.package()
            )
        })
        .collect();
    let outcomes = state.store.apply_all(accepted).await?;
    for ((outcome, kind), what) in outcomes.into_iter().zip(kinds).zip(described) {
        match outcome {
            Ok(Applied::Stored) => {
                report.records_applied += 1;
                match kind {
                    "manifest" => report.versions += 1,
                    "tag" => report.tags += 1,
                    _ => report.deletions += 1,
                }
            }
            Ok(Applied::Duplicate) => report.duplicates += 1,
            Err(ChangeError::Store(e)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(record = %what, reason = %e, "import refused a record");
                report.refused.push(format!("{what}: {e}"));
            }
        }
    }
    drop(pins);
    Ok(report)
}

type Verified = (
    BundleHeader,
    Vec<Record>,
    HashMap<Digest, (PathBuf, niso_protocol::PackageMeta)>,
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
    let mut blobs = HashMap::new();
    for entry in tar
        .entries()
        .map_err(|e| BundleError::Invalid(e.to_string()))?
    {
        let mut entry = entry.map_err(|e| BundleError::Invalid(e.to_string()))?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        match path.as_str() {
            HEADER => {
                let mut text = Vec::new();
                (&mut entry).take(64 * 1024).read_to_end(&mut text)?;
                let h: BundleHeader = serde_json::from_slice(&text)
                    .map_err(|e| BundleError::Invalid(format!("bad header: {e}")))?;
                if h.format != FORMAT {
                    return Err(BundleError::Invalid(format!(
                        "unknown bundle format `{}`",
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
                records = Some(decode_records(&bytes)?);
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
                blobs.insert(digest, (dest, verified.meta));
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
        let record = Record::from_bytes(body)
            .map_err(|e| BundleError::Tampered(format!("record {}: {e}", out.len() + 1)))?;
        out.push(record);
        rest = &rest[4 + len..];
    }
    Ok(out)
}
