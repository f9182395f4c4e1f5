//! Injected failures for the client's own crash and fault tests (`NISO_FAILPOINTS`, read by
//! `main`): a named step fails with an I/O error instead of running, or the process dies or
//! hangs at it, as a killed or stuck client would.

#[derive(Debug, Clone, Default)]
pub struct Failpoints(Vec<String>);

impl Failpoints {
    pub fn new(names: &[String]) -> Self {
        Self(names.to_vec())
    }

    pub fn check(&self, name: &str) -> std::io::Result<()> {
        if self.0.iter().any(|n| n == name) {
            return Err(std::io::Error::other(format!(
                "injected failure at `{name}`"
            )));
        }
        Ok(())
    }

    pub fn armed(&self, name: &str) -> bool {
        self.0.iter().any(|n| n == name)
    }

    /// Ends the process with SIGKILL if `name` is armed: no cleanup code runs, as when a user
    /// runs `kill -9` or the machine goes down.
    pub fn kill_if_armed(&self, name: &str) {
        if self.armed(name) {
            tracing::warn!(failpoint = name, "failpoint reached, killing this process");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            std::process::abort();
        }
    }
}
