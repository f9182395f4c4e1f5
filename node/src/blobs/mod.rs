//! Blobs between peers: the rulebook. Package bytes travel as blake3-verified ranges on
//! `/niso/blob/1`; this module holds the wire format (`wire`), serving (`serve`), the choice
//! of which segment comes from which peer (`schedule`), what a fetching node holds
//! (`have_list`), the fetch task (`fetch`, with its early flushes in `writeback`) and every
//! limit (`limits`). `docs/federation.md` links here; the rules are:
//!
//! **Wire.** A request names a digest, chunk ranges (1 KiB chunks) and whether it is a last
//! resort; the answer is `Ok{size}` followed by the bao encoding (16 KiB groups), or
//! `NotFound` ("not here" and "not shared with you" are not told apart). Every chunk group is
//! checked against the digest before it is written; a bad group, or a size that contradicts
//! the signed manifest, is a strike. A node fetching the blob itself follows a `NotFound` for
//! a segment it lacks with its have-list ([`HaveList`]: the segments it holds), to a peer the
//! package is shared with; a list that does not fit the blob, or none (earlier releases close
//! the stream), is ignored, and silence instead of either is a stall.
//!
//! **Deadlines.** Every network read and write has one: opening a stream `open`, the answer
//! and the first byte `first_byte`, every later read or write `idle` after the one before.
//! A provider that goes silent mid-range loses it within `idle`; one that trickles loses its
//! lease (`first_byte + len / min_rate`). A requester that stops reading frees its serving
//! slot within `idle`.
//!
//! **Segments.** A blob is fetched in segments (about 1/128 of it, 256 KiB to 1 MiB, whole
//! groups), the same for every node, so peers fetching one blob serve each other the
//! segments they hold. Each node walks them in its own order.
//!
//! **Schedule.** One lock, no I/O. A segment is leased to one peer at a time, with a deadline;
//! it is never asked of two peers at once (no end-game duplicates): the tail of a fetch
//! moves on when a lease ends, and leases end within the deadlines above. An answer decides:
//! verified → done; missing → back to the pool, that peer is not asked for it again for
//! `recheck`; a refused or broken stream → back to the pool, the peer retried after a short
//! pause and dropped from the fetch after `failures`; silence (a deadline or an expired
//! lease) or a corrupt group → back to the pool at once and the peer dropped from the fetch
//! (a corrupt group also strikes it). A dropped peer is not recruited again by that fetch.
//!
//! **Who is asked.** The peers that announced the record ("announcers", usually the origin)
//! and up to `helpers` other connected peers, recruited every `tick`. Helpers are asked for
//! anything they did not lack within `recheck`; the announcer only for segments some helper
//! lacked, first those every live helper lacked (its last answer about the segment was that
//! it lacks it; those requests carry `last_resort`), so what helpers hold never costs it.
//! Helpers are asked again after `recheck`, since they fill up as the fetch goes on (twice
//! that after each further miss of the same segment, up to 8 times). A have-list counts as a
//! miss, from now, of every segment it leaves out, and never undoes a miss; idle
//! announcers are offered a segment before idle helpers, or helpers re-asking would take
//! every last-resort segment first. When helpers are dropped, the announcer takes what they
//! held.
//!
//! **Ending.** A fetch ends when every segment is verified, the whole blob hashes to its
//! digest and passes the archive checks, and it takes its name in the blob store (verified
//! bytes are flushed in the background every 16 MiB, so that last flush is short). With no
//! segment verified and no byte received for `stall` (a dropped peer restarts that window,
//! so the others get a fair chance at its segment), it makes no new requests; once those in
//! flight have ended (within their deadlines), or at once when nobody is left to ask, it asks
//! the DHT for providers once, then fails: the record stays unapplied and the next sync round
//! retries. Nothing waits on a peer that is not making progress.
//!
//! **Serving.** At most `per_blob` transfers of one blob at once (`slot_wait` for a slot,
//! then `NotFound`). A holder of a complete blob remembers for `resend_after` which ranges
//! it sent whole (a transfer that broke off does not count: nobody may hold the range) and
//! answers `NotFound` to another request for them, so they come from the peer
//! that got them; a `last_resort` request for such a range is served only when it is not in
//! flight, did not arrive somewhere in the last `resend_hold` (after its first transfer
//! only), a slot is free and no request for a new range waits. A partial blob serves its
//! verified segments. [`serve::Holdings`] is all serving knows of the node.
//!
//! **Resuming and cleaning up.** Verified segments are listed in `partial/HEX.done-256k` (the
//! segment size in KiB), so a fetch resumes across restarts; a list of another segment size is
//! not read. A fetch whose bytes turn out not to be the package removes
//! its files; at start, `partial/` files of blobs now stored, files that are no fetch's, and
//! fetches untouched for `stale_partial` are removed (not merely those no version names: an
//! eager fetch runs before its record is applied, and resumes after a restart).
//!
//! **Readers.** The HTTP lazy path reads through [`BlobReader`]: bytes only once verified.
//!
//! **Bounds.** At most `fetches` fetches transfer at once; the others wait for a turn. Once
//! its last segment is verified, a fetch waits for one of `stores` places to check the whole
//! and store it, and gives its turn back when it has one (`turns`).

mod fetch;
mod have_list;
mod limits;
pub mod schedule;
pub mod serve;
mod turns;
pub mod wire;
mod writeback;

pub use fetch::{BlobReader, FetchError, FetchState, Fetcher, Partial, done_file, sweep_partials};
pub use have_list::HaveList;
pub use limits::BlobLimits;
pub use schedule::segment_bytes;
