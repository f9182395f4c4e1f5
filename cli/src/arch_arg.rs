//! Architectures typed by users: another system's spelling (`amd64`, `arm64`) is refused
//! with the name niso uses, since no package carries it.

use niso_protocol::Arch;

use crate::exit::Usage;

/// Parses an architecture from the command line or a package being packed.
pub fn parse(given: &str) -> anyhow::Result<Arch> {
    if let Some(canonical) = Arch::canonical_name(given) {
        return Err(Usage(format!(
            "architecture `{given}` is spelled `{canonical}` in niso (names follow Rust's, e.g. x86_64, aarch64); use `{canonical}`"
        ))
        .into());
    }
    Ok(Arch::new(given)?)
}
