//! The clock a run keeps: virtual time on one paused runtime (the default), or the wall clock.
//!
//! Virtual time: every node, the network and the timeline share one current-thread tokio
//! runtime whose clock starts paused. It moves only when every task waits, and then jumps to
//! the next timer, so results are bounded by link time (latency, bandwidth, loss), not by how
//! fast the host runs hundreds of nodes. Blocking work (database commits, hashing) runs in
//! place on the runtime's thread (`niso_node::offload`, which `run.rs` turns on), so the clock
//! cannot move while it runs: it costs no simulated time.
//!
//! A seed fixes the order of events, not just the schedule. Work left to another thread would
//! finish at a moment only the host decides, and wake its task before or after others of the
//! same instant. What a node does not run in place, and any library's `spawn_blocking`, goes
//! to this runtime's one blocking thread, and after every poll of a task (and of the
//! timeline, [`Clock::block_on`]) the runtime waits until that thread is idle. That narrows
//! the race to a task that finds its work already done at the first poll; in-place work has
//! none.
//!
//! What virtual time cannot do: drop one node's tasks and nothing else. A crash under the
//! wall clock drops that node's own runtime; on a shared runtime there is no such boundary,
//! so timelines with `crash` or `restart` run on the wall clock.
//!
//! libp2p's own timers (upgrade timeouts, gossipsub's heartbeat, Kademlia and identify
//! timeouts, idle connections) are on this clock too: the workspace patches `futures-timer`
//! onto tokio's timer (`patches/futures-timer`), and libp2p reads the time from it
//! (`patches/web-time`).

use std::{fmt, future::Future, str::FromStr};

use tokio::runtime::{Handle, Runtime};

use crate::scenario::{Action, Scenario};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Clock {
    /// One paused current-thread runtime for the whole cluster.
    Virtual,
    /// Real time; each node runs on a runtime of its own.
    Real,
}

#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("{0:?} crashes or restarts a node, which needs the wall clock (`--clock real`)")]
    CrashNeedsWallClock(String),
    #[error("unknown clock `{0}`, expected `virtual` or `real`")]
    Unknown(String),
    #[error("could not build the runtime")]
    Runtime(#[source] std::io::Error),
}

impl Clock {
    /// The clock `scenario` runs on: `requested` if given and possible, else the one its file
    /// names, else virtual time unless its timeline crashes a node.
    pub fn for_scenario(
        scenario: &Scenario,
        requested: Option<Clock>,
    ) -> Result<Clock, ClockError> {
        let crashes = scenario
            .events
            .iter()
            .any(|e| matches!(e.action, Action::Crash { .. } | Action::Restart { .. }));
        match requested.or(scenario.clock) {
            Some(Clock::Virtual) if crashes => {
                Err(ClockError::CrashNeedsWallClock(scenario.name.clone()))
            }
            Some(clock) => Ok(clock),
            None if crashes => Ok(Clock::Real),
            None => Ok(Clock::Virtual),
        }
    }

    /// The runtime the timeline (and, under virtual time, every node) runs on.
    pub fn runtime(self) -> Result<Runtime, ClockError> {
        match self {
            Clock::Virtual => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .max_blocking_threads(1)
                .on_after_task_poll(|_| settle())
                .build(),
            Clock::Real => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build(),
        }
        .map_err(ClockError::Runtime)
    }

    /// Runs `future` to completion on `runtime` (built by [`Clock::runtime`]). Under virtual
    /// time it waits out blocking work after every poll of `future`, as the runtime does after
    /// every poll of a task.
    pub fn block_on<F: Future>(self, runtime: &Runtime, future: F) -> F::Output {
        if self == Clock::Real {
            return runtime.block_on(future);
        }
        let mut future = std::pin::pin!(future);
        runtime.block_on(std::future::poll_fn(|cx| {
            let polled = future.as_mut().poll(cx);
            settle();
            polled
        }))
    }
}

/// Waits until the runtime's blocking thread has finished every task handed to it. A task that
/// ended has woken whoever awaits it by then: the pool counts its thread idle only after that.
fn settle() {
    let Ok(handle) = Handle::try_current() else {
        return;
    };
    let metrics = handle.metrics();
    while metrics.num_blocking_threads() > metrics.num_idle_blocking_threads() {
        std::thread::yield_now();
    }
}

impl FromStr for Clock {
    type Err = ClockError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "virtual" => Ok(Clock::Virtual),
            "real" => Ok(Clock::Real),
            other => Err(ClockError::Unknown(other.to_owned())),
        }
    }
}

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Clock::Virtual => "virtual",
            Clock::Real => "real",
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The workspace's `[patch.crates-io]` is what puts libp2p's timers on this clock; a
    /// `cargo update` to a futures-timer the patch does not match would quietly undo it.
    #[test]
    fn libp2p_timers_run_on_the_virtual_clock() {
        Clock::Virtual.runtime().unwrap().block_on(async {
            let start = tokio::time::Instant::now();
            tokio::time::timeout(
                Duration::from_secs(7200),
                futures_timer::Delay::new(Duration::from_secs(3600)),
            )
            .await
            .expect("futures-timer's Delay is patched onto tokio's clock");
            assert_eq!(start.elapsed(), Duration::from_secs(3600));
        });
    }
}
