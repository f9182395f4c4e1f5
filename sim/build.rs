//! Checks that tokio is built with its poll hooks, which virtual time needs (`src/clock.rs`):
//! without them the simulator does not compile, and this says why first.

fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if !flags.split('\x1f').any(|f| f == "tokio_unstable") {
        eprintln!(
            "niso-sim needs tokio's poll hooks: build with `--cfg tokio_unstable` \
             (set in .cargo/config.toml; a RUSTFLAGS in the environment replaces it, so add it there)"
        );
        std::process::exit(1);
    }
}
