//! Wall-clock time in milliseconds since the Unix epoch, the unit of every stored timestamp.
//!
//! A thread may instead follow its tokio runtime's clock from a fixed epoch
//! ([`follow_runtime_clock`]): the simulator's virtual time does, so that records signed in a
//! run carry the same timestamps, hence the same bytes and gossip message ids, for a seed.

use std::{
    cell::Cell,
    time::{SystemTime, UNIX_EPOCH},
};

thread_local! {
    /// The epoch and the runtime instant it stands for, on a thread that follows its runtime.
    static FOLLOWED: Cell<Option<(u64, tokio::time::Instant)>> = const { Cell::new(None) };
}

pub fn now_ms() -> u64 {
    if let Some((epoch_ms, anchor)) = FOLLOWED.get() {
        let since = u64::try_from(anchor.elapsed().as_millis()).unwrap_or(u64::MAX);
        return epoch_ms.saturating_add(since);
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// From now on, [`now_ms`] on this thread is `epoch_ms` plus the time its tokio runtime's clock
/// has moved since this call. Call it inside the runtime.
pub fn follow_runtime_clock(epoch_ms: u64) {
    FOLLOWED.set(Some((epoch_ms, tokio::time::Instant::now())));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::time::Duration;

    use super::*;

    #[test]
    fn a_thread_that_follows_its_runtime_counts_from_the_epoch_on_that_clock() {
        std::thread::spawn(|| {
            let real = now_ms();
            assert!(real > 1_600_000_000_000, "the system clock: {real}");
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
                .block_on(async {
                    follow_runtime_clock(1_000);
                    assert_eq!(now_ms(), 1_000);
                    tokio::time::advance(Duration::from_millis(2_500)).await;
                    assert_eq!(now_ms(), 3_500);
                });
        })
        .join()
        .unwrap();
    }
}
