//! `web_time`'s `Instant` as tokio's, patched in for the whole workspace.
//!
//! libp2p reads the time through `web_time::Instant::now()`, which upstream is the standard
//! library's wall clock: gossipsub's peer scores, backoffs and IDONTWANT expiry, Kademlia's
//! query deadlines, yamux's and the swarm's bookkeeping. Under the simulator's virtual time
//! that clock runs at the host's pace while everything else (the timers of
//! `patches/futures-timer` included) runs on the paused runtime's, so a slow host aged
//! gossipsub's state faster than a fast one and the same seed gave other meshes. tokio's
//! `Instant` reads the runtime's clock when there is one (the simulated one, if paused) and
//! the standard library's otherwise; on a running clock the two are the same.
//!
//! Contract (the upstream API its users call): `Instant` has `now`, `elapsed`,
//! `duration_since`, the `checked_`/`saturating_` forms and `Duration` arithmetic; the rest of
//! the module is `std::time` unchanged. `SystemTime` stays the standard library's: nothing in
//! libp2p decides anything by it.

pub use std::time::{Duration, SystemTime, SystemTimeError, TryFromFloatSecsError, UNIX_EPOCH};
pub use tokio::time::Instant;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn a_paused_runtime_s_clock_is_the_one_read() {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(async {
                let start = Instant::now();
                tokio::time::advance(Duration::from_secs(3600)).await;
                assert_eq!(start.elapsed(), Duration::from_secs(3600));
            });
    }
}
