//! The multi-node simulator: many real nodes (the `node` crate itself) in one process, over an
//! in-process libp2p transport with seeded faults, playing scenarios and checking invariants.
//!
//! Architecture invariant: the simulator drives the real node through its public API and HTTP
//! router; it never models a node.
//!
//! Time is real time: nodes do blocking I/O (their database, hashing) that a paused virtual
//! clock would skip over. Timings therefore vary with the host; what the seed fixes (node
//! identities, the fault schedule, which changes each node ends up holding, the invariant
//! verdicts) is reported separately as `exact`.

pub mod cluster;
pub mod hostile;
pub mod invariants;
pub mod network;
pub mod observer;
pub mod plot;
pub mod report;
pub mod run;
pub mod scenario;
