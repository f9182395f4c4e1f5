//! The multi-node simulator: many real nodes (the `node` crate itself) in one process, over an
//! in-process libp2p transport with seeded faults, playing scenarios and checking invariants.
//!
//! Architecture invariant: the simulator drives the real node through its public API and HTTP
//! router; it never models a node.
//!
//! Time is virtual by default (`clock.rs`): the whole cluster runs on one paused runtime, so
//! link time, not host speed, bounds the results. What the seed fixes on either clock (node
//! identities, the fault schedule, which changes each node ends up holding, the invariant
//! verdicts) is reported separately as `exact`; under virtual time the `niso-sim` binary
//! repeats the timings and traffic for a seed too (`entropy.rs`).

pub mod clock;
pub mod cluster;
pub mod entropy;
pub mod hostile;
pub mod invariants;
pub mod network;
pub mod observer;
pub mod plot;
pub mod report;
pub mod run;
pub mod scenario;

/// The allocator the `niso` binary runs its node on, so simulated nodes allocate as real ones
/// do; set here because this library exists for the `niso-sim` binary, its tests and its
/// benchmark, and all three should run on it. glibc's malloc took about 15 % of a 256-node
/// run's samples (docs/simulator.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
