//! The multi-node simulator: many real nodes (the `node` crate itself) in one process, over an
//! in-process libp2p transport with seeded faults, playing scenarios and checking invariants.
//!
//! Architecture invariant: the simulator drives the real node through its public API and HTTP
//! router; it never models a node.
//!
//! Time is virtual by default (`clock.rs`): the whole cluster runs on one paused runtime, so
//! link time, not host speed, bounds the results. What the seed fixes for certain (node
//! identities, the fault schedule, which changes each node ends up holding, the invariant
//! verdicts) is reported separately as `exact`.

pub mod clock;
pub mod cluster;
pub mod hostile;
pub mod invariants;
pub mod network;
pub mod observer;
pub mod plot;
pub mod report;
pub mod run;
pub mod scenario;
