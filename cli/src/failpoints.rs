//! Injected failures for the client's own crash and fault tests (`NISO_FAILPOINTS`, read by
//! `main`): a named step fails with an I/O error instead of running.

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
}
