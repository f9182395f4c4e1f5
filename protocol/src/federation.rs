//! Messages nodes exchange over libp2p: sync requests and pages, blob requests, and gossip
//! announcements. Each travels as one length-prefixed postcard frame (see `docs/federation.md`).

use serde::{Deserialize, Serialize};

/// Protocol names.
pub const SYNC_PROTOCOL: &str = "/niso/sync/2";
pub const BLOB_PROTOCOL: &str = "/niso/blob/1";
pub const KAD_PROTOCOL: &str = "/niso/kad/1";
pub const IDENTIFY_PROTOCOL: &str = "/niso/id/1";
/// Gossipsub topic for records of packages shared with everyone.
pub const RECORDS_TOPIC: &str = "niso/records/v1";

/// Largest frame a node reads: requests are small, pages are bounded by record count.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;
/// Most records one sync page carries.
pub const MAX_PAGE: u32 = 500;
/// Chunk groups of 16 KiB: a wrong byte is caught within one of them.
pub const BLOB_CHUNK_LOG: u8 = 4;

/// The first frame on a sync stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMessage {
    /// "Send me your records after log position `after`, that you share with me and I want."
    Pull {
        after: u64,
        limit: u32,
        /// `(origin peer id or "*", package globs)`: what the requester's rules accept.
        wants: Vec<(String, Vec<String>)>,
    },
    /// "I have something new for you; pull from me." One-way.
    Poke,
}

/// The answer to [`SyncMessage::Pull`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPage {
    /// Signed records in their binary form, in the responder's log order.
    pub records: Vec<Vec<u8>>,
    /// The responder's log position after this page: the next `after`.
    pub next: u64,
    pub more: bool,
    /// Changes when the responder's share rules for the requester change; the requester then
    /// starts over from position 0.
    pub share_fingerprint: u64,
    /// The responder's last log position when it answered (at least `next`): how far the
    /// requester is behind, counted in the responder's log.
    pub head: u64,
}

/// The first frame on a blob stream: verified ranges of one blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRequest {
    pub digest: [u8; 32],
    /// Half-open ranges of 1 KiB chunks, aligned to chunk groups.
    pub chunk_ranges: Vec<(u64, u64)>,
    /// The requester found no other peer holding these ranges: serve them even if they were
    /// sent to another peer lately (which a holder otherwise declines, so they spread
    /// between peers).
    pub last_resort: bool,
}

/// The responder's answer, followed (when `Ok`) by the bao-encoded ranges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobResponse {
    Ok {
        size: u64,
    },
    /// Not held here (or not shared with the requester: the two are not told apart).
    NotFound,
}

/// May follow [`BlobResponse::NotFound`] from a node that is fetching the blob itself: which
/// of its segments it holds, so the requester asks it for those and not the others. Earlier
/// releases neither send nor read it; a requester whose stream ends without it learns nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobHoldings {
    /// The segment size, in bytes, that the bits count in. A requester that splits the blob
    /// otherwise ignores them.
    pub segment: u64,
    /// Bit `i % 8` of byte `i / 8` is set when segment `i` is held.
    pub held: Vec<u8>,
}

/// Encodes a frame: u32 big-endian length, then postcard bytes.
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_stdvec(value).map_err(|_| FrameError::Encode)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(
        &u32::try_from(body.len())
            .map_err(|_| FrameError::TooLarge(body.len()))?
            .to_be_bytes(),
    );
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a frame body (without its length prefix).
pub fn decode_frame<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(body).map_err(|_| FrameError::Decode)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is larger than allowed")]
    TooLarge(usize),
    #[error("could not encode a frame")]
    Encode,
    #[error("frame is malformed")]
    Decode,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let m = SyncMessage::Pull {
            after: 7,
            limit: 100,
            wants: vec![("*".into(), vec!["acme-*".into()])],
        };
        let bytes = encode_frame(&m).unwrap();
        assert_eq!(
            u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize,
            bytes.len() - 4
        );
        assert_eq!(decode_frame::<SyncMessage>(&bytes[4..]).unwrap(), m);
        assert!(decode_frame::<SyncMessage>(&[0xff, 0xff]).is_err());
    }
}
