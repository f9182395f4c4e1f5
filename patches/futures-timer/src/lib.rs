//! `futures_timer::Delay` on the tokio runtime's timer, patched in for the whole workspace.
//!
//! libp2p counts its own time with `futures-timer`: transport upgrade timeouts, ping,
//! identify, gossipsub's heartbeat, Kademlia's bootstrap and request timeouts, idle
//! connections. Upstream, every `Delay` lives on a timer thread of its own that counts wall-clock
//! time and wakes tasks across threads. Two things follow from putting them on tokio instead:
//!
//! - The simulator's paused clock drives them like every other timer in a node. Under virtual
//!   time a busy host no longer makes handshakes time out (each timeout cost a redial and a
//!   new handshake), heartbeats and pings come per simulated second, and the clock is one.
//! - A real node wakes its libp2p timers on its runtime's own timer instead of through a
//!   second thread.
//!
//! Contract (the upstream API that libp2p uses): `Delay::new(duration)` completes once that
//! much time has passed on the clock of the runtime that polls it; `reset(duration)` restarts
//! it from now. A `Delay` must be polled inside a tokio runtime with its timer enabled, which
//! every libp2p task of ours is (the swarm runs on `SwarmBuilder::with_tokio`).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Sleep;

/// A future that completes after a duration, on tokio's clock.
pub struct Delay {
    state: State,
}

enum State {
    /// Made outside a runtime (libp2p builds some of its timers in constructors): the duration
    /// starts counting at the first poll, which runs inside one.
    Unarmed(Duration),
    Armed(Pin<Box<Sleep>>),
}

impl Delay {
    /// A delay that completes `dur` from now.
    pub fn new(dur: Duration) -> Delay {
        let state = if tokio::runtime::Handle::try_current().is_ok() {
            State::Armed(Box::pin(tokio::time::sleep(dur)))
        } else {
            State::Unarmed(dur)
        };
        Delay { state }
    }

    /// Restarts the delay to complete `dur` from now, whether or not it had completed.
    ///
    /// A new timer rather than `Sleep::reset`: it belongs to the runtime current now (the one
    /// whose clock "now" was read on), and a huge `dur` saturates as in `new`.
    pub fn reset(&mut self, dur: Duration) {
        *self = Delay::new(dur);
    }
}

impl Future for Delay {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let State::Unarmed(dur) = self.state {
            self.state = State::Armed(Box::pin(tokio::time::sleep(dur)));
        }
        match &mut self.state {
            State::Armed(sleep) => sleep.as_mut().poll(cx),
            State::Unarmed(_) => Poll::Pending,
        }
    }
}

impl fmt::Debug for Delay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Unarmed(dur) => f.debug_struct("Delay").field("unarmed", dur).finish(),
            State::Armed(sleep) => f
                .debug_struct("Delay")
                .field("deadline", &sleep.deadline())
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    #[test]
    fn completes_after_its_duration_on_a_paused_clock() {
        current_thread().block_on(async {
            let start = Instant::now();
            // Upstream's thread would sleep an hour of wall-clock time, and the paused clock
            // would reach the bound first; on tokio's clock the delay is the next timer.
            tokio::time::timeout(
                Duration::from_secs(7200),
                Delay::new(Duration::from_secs(3600)),
            )
            .await
            .expect("the delay runs on the runtime's clock");
            assert_eq!(Instant::now() - start, Duration::from_secs(3600));
        });
    }

    #[test]
    fn reset_restarts_from_now() {
        current_thread().block_on(async {
            let start = Instant::now();
            let mut delay = Delay::new(Duration::from_secs(10));
            tokio::time::sleep(Duration::from_secs(4)).await;
            delay.reset(Duration::from_secs(10));
            (&mut delay).await;
            assert_eq!(Instant::now() - start, Duration::from_secs(14));
            // A completed delay, reset, waits again.
            delay.reset(Duration::from_secs(1));
            delay.await;
            assert_eq!(Instant::now() - start, Duration::from_secs(15));
        });
    }

    #[test]
    fn made_outside_a_runtime_it_counts_from_its_first_poll() {
        let delay = Delay::new(Duration::from_secs(5));
        assert!(format!("{delay:?}").contains("unarmed"));
        current_thread().block_on(async {
            tokio::time::sleep(Duration::from_secs(100)).await;
            let start = Instant::now();
            delay.await;
            assert_eq!(Instant::now() - start, Duration::from_secs(5));
        });
    }
}
