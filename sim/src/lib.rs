//! The multi-node simulator: many real nodes in one process under seeded network faults.
//!
//! Not built yet: it arrives with the simulator issue, after federation. The crate exists now so
//! that the workspace layout is the final one.
