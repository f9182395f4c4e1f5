//! The randomness of the `niso-sim` process: a seeded stream per thread in place of the
//! kernel's, so that a seed fixes what libp2p draws (gossipsub's mesh, Kademlia's choices,
//! handshake keys), the order in which hash maps iterate and tokio's `select!` picks.
//!
//! Those draws all go through the C library's `getrandom`, looked up at run time (`dlsym`) by
//! the standard library and by the `getrandom` crate. The `niso-sim` binary defines that symbol
//! itself (`main.rs`) and answers from [`fill`]. Other binaries that
//! link this library (its tests, the benchmark) keep the kernel's randomness.
//!
//! Each thread starts from the same fixed stream; a run reseeds its own thread with its seed
//! before it builds anything ([`reseed`], `run.rs`). Only the run's thread carries the
//! simulation under virtual time; what other threads draw (blocking work, the database
//! writers) never decides an order the report can see.

use std::cell::RefCell;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// Keeps the stream apart from the other uses of the seed (identities, links, packages).
const DOMAIN: u64 = 0x6e69_736f_2d72_6e67;

thread_local! {
    static STREAM: RefCell<ChaCha12Rng> = RefCell::new(ChaCha12Rng::seed_from_u64(DOMAIN));
}

/// Restarts this thread's stream from `seed`.
pub fn reseed(seed: u64) {
    let _ = STREAM.try_with(|s| *s.borrow_mut() = ChaCha12Rng::seed_from_u64(seed ^ DOMAIN));
}

/// Fills `buf` from this thread's stream. Never panics: it is called from C.
pub fn fill(buf: &mut [u8]) {
    let _ = STREAM.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            s.fill_bytes(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw() -> [u8; 16] {
        let mut b = [0u8; 16];
        fill(&mut b);
        b
    }

    #[test]
    fn a_seed_fixes_the_stream_and_another_seed_changes_it() {
        std::thread::spawn(|| {
            reseed(7);
            let a = (draw(), draw());
            reseed(7);
            assert_eq!((draw(), draw()), a);
            reseed(8);
            assert_ne!(draw(), a.0);
        })
        .join()
        .unwrap();
    }
}
