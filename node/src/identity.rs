//! The node's ed25519 identity: kept in `DATA_DIR/node.key` (0600), it signs the node's records
//! and, as a libp2p peer id, names the node.

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock, PoisonError},
};

use niso_protocol::record::{NodeSecret, OriginKey};

const KEY_FILE: &str = "node.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("could not read node key {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write node key {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} has no node key: the data dir of a node that has started holds one")]
    Missing(PathBuf),
    #[error("node key {0} is corrupt (expected 32 bytes)")]
    Corrupt(PathBuf),
    #[error("the operating system's random number generator failed")]
    Random,
}

/// Loads the node key of a data dir without creating anything: lets tools name a node that
/// is not running.
pub fn load(data_dir: &Path) -> Result<NodeSecret, IdentityError> {
    let path = data_dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes: [u8; 32] = bytes
                .try_into()
                .map_err(|_| IdentityError::Corrupt(path.clone()))?;
            Ok(NodeSecret::from_bytes(&bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(IdentityError::Missing(data_dir.to_owned()))
        }
        Err(source) => Err(IdentityError::Read { path, source }),
    }
}

/// Loads the node key, creating it on first start.
pub fn load_or_create(data_dir: &Path) -> Result<NodeSecret, IdentityError> {
    let path = data_dir.join(KEY_FILE);
    match load(data_dir) {
        Err(IdentityError::Missing(_)) => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|_| IdentityError::Random)?;
            write_secret_file(&path, &bytes).map_err(|source| IdentityError::Write {
                path: path.clone(),
                source,
            })?;
            Ok(NodeSecret::from_bytes(&bytes))
        }
        other => other,
    }
}

/// Writes a file only its owner can read, durably, without ever exposing a partial file.
pub(crate) fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Origin keys whose peer ids are remembered; past this the memo starts over, so records
/// signed by many keys (a hostile peer's) cannot grow it.
const PEER_ID_MEMO: usize = 4096;

/// The libp2p peer id for an origin key.
///
/// Remembered: a catch-up judges and serves every record by its origin's peer id, and the
/// conversion (decompressing a curve point, then base58) cost more than the rest of serving a
/// sync page. A catalog has few origins.
pub fn peer_id(origin: &OriginKey) -> String {
    static MEMO: OnceLock<Mutex<HashMap<[u8; 32], String>>> = OnceLock::new();
    let memo = MEMO.get_or_init(Mutex::default);
    if let Some(id) = memo
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&origin.0)
    {
        return id.clone();
    }
    let id = libp2p_identity::ed25519::PublicKey::try_from_bytes(&origin.0)
        .map(|pk| {
            libp2p_identity::PublicKey::from(pk)
                .to_peer_id()
                .to_string()
        })
        .unwrap_or_else(|_| origin.to_string());
    let mut memo = memo.lock().unwrap_or_else(PoisonError::into_inner);
    if memo.len() >= PEER_ID_MEMO {
        memo.clear();
    }
    memo.insert(origin.0, id.clone());
    id
}

/// A fixed peer id for tests: the ed25519 key of 32 bytes `n`.
#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a fixed valid key")]
pub(crate) fn test_peer(n: u8) -> libp2p::PeerId {
    libp2p::identity::Keypair::ed25519_from_bytes([n; 32])
        .unwrap()
        .public()
        .to_peer_id()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_then_reloaded_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.origin(), b.origin());
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(peer_id(&a.origin()).starts_with("12D3KooW"));
    }

    #[test]
    fn remembered_peer_ids_are_the_keys_own() {
        for n in 1..=3u8 {
            let key = libp2p::identity::Keypair::ed25519_from_bytes([n; 32]).unwrap();
            let origin = OriginKey(key.public().try_into_ed25519().unwrap().to_bytes());
            let first = peer_id(&origin);
            assert_eq!(peer_id(&origin), first, "the remembered id is the same");
            assert_eq!(first, test_peer(n).to_string());
        }
        // Not a curve point: named by its hex, remembered or not.
        let bad = (0..=u8::MAX)
            .map(|b| OriginKey([b; 32]))
            .find(|k| libp2p_identity::ed25519::PublicKey::try_from_bytes(&k.0).is_err())
            .unwrap();
        assert_eq!(peer_id(&bad), bad.to_string());
        assert_eq!(peer_id(&bad), bad.to_string());
    }
}
