//! Every limit and deadline of the blob exchange, in one struct with its defaults.

use std::time::Duration;

/// Limits of fetching and serving blobs. The defaults are what `docs/federation.md` lists;
/// tests shorten the deadlines to exercise them quickly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobLimits {
    /// Peers asked at once for one blob, besides the announcers.
    pub helpers: usize,
    /// How often a running fetch looks for peers to ask, expires leases and checks for a stall.
    pub tick: Duration,
    /// Opening a stream to a provider (one round trip on a live connection).
    pub open: Duration,
    /// From sending a request to the response header (`Ok{size}` or `NotFound`), and from
    /// the header to the first byte of the range. Covers a provider's wait for a serving slot.
    pub first_byte: Duration,
    /// Longest silence between two reads of a range once bytes flow. A provider that stops
    /// mid-range loses its segment within this.
    pub idle: Duration,
    /// The slowest transfer rate a lease allows, in bytes per second: a segment's lease is
    /// `first_byte + len / min_rate`, so a provider that trickles loses it too.
    pub min_rate: u64,
    /// After lacking a segment, a peer is not asked for it again for this long (a helper:
    /// twice as long after each further miss of that segment, up to 8 times).
    pub recheck: Duration,
    /// A peer that went silent in one fetch is not recruited as a helper by any fetch for
    /// this long (an announcer is still asked: it may be the only holder).
    pub bench: Duration,
    /// A refused or broken stream is retried this many times per peer; then the peer is
    /// dropped from the fetch. A corrupt chunk or a stall drops it at once.
    pub failures: u32,
    /// With no segment verified for this long and nothing in flight, the fetch asks the DHT
    /// for providers once, then fails (the next sync round retries).
    pub stall: Duration,
    /// Blob fetches transferring at once on this node; more wait for a turn.
    pub fetches: usize,
    /// Fetches checking and storing their blob at once (the archive check, then the file's
    /// fsync and its directory's). A fetch whose segments are all verified waits for a place
    /// holding its turn, and gives the turn back once it has one.
    pub stores: usize,
    /// Transfers of one blob served at once (complete or partial).
    pub per_blob: usize,
    /// How long a request waits for a per-blob slot before it is turned away.
    pub slot_wait: Duration,
    /// How long a holder of a complete blob remembers which ranges it sent.
    pub resend_after: Duration,
    /// How long after a range arrived at one peer a last-resort request for it waits.
    pub resend_hold: Duration,
    /// `partial/` files untouched this long are removed at start: their fetch was abandoned.
    pub stale_partial: Duration,
}

impl Default for BlobLimits {
    fn default() -> Self {
        Self {
            helpers: 16,
            tick: Duration::from_millis(250),
            open: Duration::from_secs(3),
            first_byte: Duration::from_secs(5),
            idle: Duration::from_secs(3),
            min_rate: 64 * 1024,
            recheck: Duration::from_millis(200),
            bench: Duration::from_secs(30),
            failures: 3,
            stall: Duration::from_secs(3),
            fetches: 8,
            stores: 16,
            per_blob: 2,
            slot_wait: Duration::from_secs(1),
            resend_after: Duration::from_secs(30),
            resend_hold: Duration::from_millis(500),
            stale_partial: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl BlobLimits {
    /// How long a provider may hold a segment of `len` bytes: opening the stream, the first
    /// byte, and the bytes at `min_rate`.
    pub fn lease(&self, len: u64) -> Duration {
        let rate = self.min_rate.max(1);
        self.open + self.first_byte + Duration::from_millis(len.saturating_mul(1000) / rate)
    }
}
