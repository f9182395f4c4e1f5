//! The report of a run. `exact` holds what the seed determines on either clock (identities, the
//! fault schedule, final holdings, invariant verdicts) and must repeat for the same seed;
//! `measured` holds timings and traffic, which repeat too under virtual time in a `niso-sim`
//! process (all but `wall_secs`), and depend on the host on the wall clock.

use std::fmt::Write;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    /// `virtual` or `real` (`clock.rs`).
    pub clock: String,
    pub exact: Exact,
    pub measured: Measured,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Exact {
    pub nodes: usize,
    pub peer_ids: Vec<String>,
    pub events: Vec<String>,
    /// Per node, the changes it holds at the end.
    pub holdings: Vec<Vec<String>>,
    pub invariants: Vec<Check>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub kind: String,
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemStats {
    pub item: String,
    pub holders: usize,
    pub expected: usize,
    pub p50_secs: Option<f64>,
    pub p99_secs: Option<f64>,
    pub max_secs: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Simulated time the run took.
    pub duration_secs: f64,
    /// Host time it took; under virtual time, unrelated to the timings.
    pub wall_secs: f64,
    pub items: Vec<ItemStats>,
    /// All bytes every node sent, per blob byte each receiving node needed.
    pub bytes_per_blob_byte_per_node: Option<f64>,
    /// Bytes the origin of the largest package sent, as a multiple of its size.
    pub origin_egress_x: Option<f64>,
    /// Blob bytes served beyond what receivers needed, as a multiple of what they needed.
    pub duplicate_transfer_x: Option<f64>,
    /// Seconds from the last fault healing to the last expected node converging.
    pub converge_after_heal_secs: Option<f64>,
    pub bytes_sent: Vec<u64>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.exact.invariants.iter().all(|c| c.ok)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let fmt = |v: Option<f64>| v.map(|s| format!("{s:.2}s")).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "scenario {} (seed {}, {} clock): {} nodes, {:.1}s simulated in {:.1}s",
            self.scenario,
            self.seed,
            self.clock,
            self.exact.nodes,
            self.measured.duration_secs,
            self.measured.wall_secs
        );
        let _ = writeln!(out, "time until every expected node holds each change:");
        for i in &self.measured.items {
            let _ = writeln!(
                out,
                "  {:<40} p50 {:>8}  p99 {:>8}  max {:>8}  {}/{} nodes",
                i.item,
                fmt(i.p50_secs),
                fmt(i.p99_secs),
                fmt(i.max_secs),
                i.holders,
                i.expected
            );
        }
        let x = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        let _ = writeln!(out, "traffic:");
        let _ = writeln!(
            out,
            "  bytes sent per blob byte per node   {}",
            x(self.measured.bytes_per_blob_byte_per_node)
        );
        let _ = writeln!(
            out,
            "  origin egress (x size)              {}",
            x(self.measured.origin_egress_x)
        );
        let _ = writeln!(
            out,
            "  duplicate transfers (x needed)      {}",
            x(self.measured.duplicate_transfer_x)
        );
        let _ = writeln!(
            out,
            "  converged after last heal           {}",
            fmt(self.measured.converge_after_heal_secs)
        );
        let _ = writeln!(out, "invariants:");
        for c in &self.exact.invariants {
            let _ = writeln!(
                out,
                "  {:<8} {:<44} {}{}",
                c.kind,
                c.name,
                if c.ok { "ok" } else { "VIOLATED" },
                if c.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", c.detail)
                }
            );
        }
        out
    }
}

/// The `q`-quantile (0..=1) of `values`, nearest rank.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::quantile(&v, 0.5), Some(50.0));
        assert_eq!(super::quantile(&v, 0.99), Some(99.0));
        assert_eq!(super::quantile(&v, 1.0), Some(100.0));
        assert_eq!(super::quantile(&[], 0.5), None);
    }
}
