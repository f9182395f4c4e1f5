//! A have-list: which segments of a blob a node fetching it holds. A node that answers a miss
//! sends one after `NotFound` ([`BlobHoldings`] on the wire), so the requester asks it for
//! what it holds instead of walking the segments it lacks one round trip at a time.

use niso_protocol::federation::BlobHoldings;

use super::schedule::{segment_bytes, segment_count};

/// The largest have-list frame read: one bit per segment, enough for a blob of just under
/// 512 GiB. A node with a larger list does not send it (the requester then learns nothing, as
/// from a node of an earlier release).
pub const MAX_HAVE_LIST: usize = 64 * 1024;

/// Segments of one blob held by a peer, checked against the blob's size: one bit per segment
/// as this node splits it, none past the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaveList {
    bits: Vec<u8>,
    count: u64,
    segment: u64,
}

impl HaveList {
    /// The list of a blob of `size` bytes whose segment `i` is held when `held(i)`.
    pub fn new(size: u64, held: impl Fn(u64) -> bool) -> Self {
        let count = segment_count(size);
        let mut bits = vec![0u8; bytes_for(count)];
        for i in (0..count).filter(|&i| held(i)) {
            bits[(i / 8) as usize] |= 1 << (i % 8);
        }
        Self {
            bits,
            count,
            segment: segment_bytes(size),
        }
    }

    /// Reads a peer's list for a blob of `size` bytes: `None` when it counts in other segments
    /// or is not exactly one bit per segment (a hostile or newer peer's list is not guessed
    /// at; the requester then learns nothing).
    pub fn parse(frame: BlobHoldings, size: u64) -> Option<Self> {
        let count = segment_count(size);
        if frame.segment != segment_bytes(size) || frame.held.len() != bytes_for(count) {
            return None;
        }
        let spare = u8::try_from(count % 8).ok()?;
        if spare != 0 && frame.held.last().is_some_and(|last| last >> spare != 0) {
            return None;
        }
        Some(Self {
            bits: frame.held,
            count,
            segment: frame.segment,
        })
    }

    /// The frame for the wire.
    pub fn to_frame(&self) -> BlobHoldings {
        BlobHoldings {
            segment: self.segment,
            held: self.bits.clone(),
        }
    }

    /// Segments of the blob, held or not.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether segment `segment` is held (never one past the last).
    pub fn contains(&self, segment: u64) -> bool {
        segment < self.count
            && self
                .bits
                .get((segment / 8) as usize)
                .is_some_and(|b| b & (1 << (segment % 8)) != 0)
    }

    /// The held segments, in order.
    pub fn held(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.count).filter(|&i| self.contains(i))
    }
}

fn bytes_for(count: u64) -> usize {
    usize::try_from(count.div_ceil(8)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 segments of 256 KiB.
    const SIZE: u64 = 10 * 256 * 1024;

    #[test]
    fn a_list_round_trips_through_its_frame() {
        let list = HaveList::new(SIZE, |i| i == 0 || i == 9);
        let frame = list.to_frame();
        assert_eq!(frame.segment, 256 * 1024);
        assert_eq!(frame.held, vec![0b0000_0001, 0b0000_0010]);
        let back = HaveList::parse(frame, SIZE).unwrap();
        assert_eq!(back, list);
        assert_eq!(back.count(), 10);
        assert_eq!(back.held().collect::<Vec<_>>(), vec![0, 9]);
        assert!(
            !back.contains(10) && !back.contains(11),
            "nothing past the last"
        );
    }

    #[test]
    fn a_list_that_does_not_fit_the_blob_is_not_read() {
        let good = HaveList::new(SIZE, |_| true).to_frame();
        // Another segment size: its bits would name other bytes.
        let other = BlobHoldings {
            segment: 1024 * 1024,
            ..good.clone()
        };
        assert_eq!(HaveList::parse(other, SIZE), None);
        // Too short, too long.
        for len in [1, 3] {
            let wrong = BlobHoldings {
                held: vec![0xff; len],
                ..good.clone()
            };
            assert_eq!(HaveList::parse(wrong, SIZE), None, "{len} bytes");
        }
        // A bit past the last segment.
        let past = BlobHoldings {
            held: vec![0xff, 0b0000_0111],
            ..good.clone()
        };
        assert_eq!(HaveList::parse(past, SIZE), None);
        assert!(HaveList::parse(good, SIZE).is_some());
    }
}
