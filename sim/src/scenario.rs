//! Scenario files: topology, trust rules, faults and a timeline of changes, in TOML.

use std::path::Path;

use niso_node::p2p::transport::Security;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `real` pins the wall clock; unset, the run decides (`clock.rs`).
    #[serde(default)]
    pub clock: Option<crate::clock::Clock>,
    pub nodes: usize,
    /// Nodes every node dials at start.
    #[serde(default = "default_bootstrap")]
    pub bootstrap: Vec<usize>,
    /// Besides `bootstrap`, each node dials this many nodes before it, chosen by the seed: a
    /// federation where each site knows a few others, not one where all dial the same hubs.
    #[serde(default)]
    pub bootstrap_random: usize,
    /// Each node's `p2p.max_connections`; the node's default (128) when absent.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// How connections authenticate and encrypt: `noise`, what a node runs with, or
    /// `plaintext`, which skips the cryptography (host time and memory only: simulated
    /// timings hardly move) and takes each peer's identity on its word, so it is refused
    /// together with hostile nodes.
    #[serde(default)]
    pub security: Security,
    /// Per-node uplink capacity; unlimited when absent.
    #[serde(default)]
    pub uplink_mbit: Option<f64>,
    #[serde(default)]
    pub link: Link,
    /// How often nodes run anti-entropy sync.
    #[serde(default = "default_sync")]
    pub sync_interval_secs: u64,
    #[serde(default)]
    pub rules: Vec<RuleGroup>,
    /// Nodes that forge records, corrupt blobs and flood.
    #[serde(default)]
    pub hostile: Vec<usize>,
    #[serde(default)]
    pub events: Vec<Event>,
    #[serde(default)]
    pub expect: Expect,
}

fn default_bootstrap() -> Vec<usize> {
    vec![0]
}

fn default_sync() -> u64 {
    2
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    #[serde(default)]
    pub latency_ms: f64,
    #[serde(default)]
    pub jitter_ms: f64,
    #[serde(default)]
    pub loss: f64,
}

/// Which nodes a rule group applies to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Nodes {
    All(AllNodes),
    List(Vec<usize>),
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AllNodes {
    All,
}

impl Nodes {
    pub fn contains(&self, n: usize) -> bool {
        match self {
            Self::All(_) => true,
            Self::List(l) => l.contains(&n),
        }
    }
}

/// `[[replicate]]` and `[[share]]` rules for some nodes. In `from` and `to`, `node:N` stands for
/// node N's peer id.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroup {
    pub nodes: Nodes,
    #[serde(default)]
    pub replicate: Vec<Replicate>,
    #[serde(default)]
    pub share: Vec<Share>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Replicate {
    pub from: String,
    pub packages: Vec<String>,
    #[serde(default = "eager")]
    pub blobs: String,
}

fn eager() -> String {
    "eager".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    pub to: String,
    pub packages: Vec<String>,
}

// `flatten` and `deny_unknown_fields` do not mix in serde, so events accept unknown keys.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Event {
    /// Seconds after the start of the run.
    pub at_secs: f64,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    Push {
        node: usize,
        package: String,
        version: String,
        /// Payload size in KiB.
        size_kib: u64,
    },
    Tag {
        node: usize,
        package: String,
        tag: String,
        version: String,
    },
    Delete {
        node: usize,
        package: String,
        version: String,
    },
    Partition {
        groups: Vec<Vec<usize>>,
    },
    Heal,
    Clog {
        a: usize,
        b: usize,
        for_secs: f64,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    /// The node goes silent mid-whatever for the rest of the run, as a stopped process does
    /// (see `network`): connections stay open and nothing moves on them.
    Silence {
        node: usize,
    },
    /// Changes every link's loss rate.
    Loss {
        value: f64,
    },
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Liveness: every expected node holds everything this long after the last fault heals
    /// (or the last change, if later).
    #[serde(default = "default_converge")]
    pub converge_within_secs: f64,
    /// Packages (globs) that must never reach the listed nodes.
    #[serde(default)]
    pub private: Vec<Private>,
}

fn default_converge() -> f64 {
    60.0
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Private {
    pub packages: Vec<String>,
    pub nodes: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("could not read {0}")]
    Read(String, #[source] std::io::Error),
    #[error("{0} is not a valid scenario")]
    Parse(String, #[source] toml::de::Error),
    #[error("scenario `{0}`: {1}")]
    Invalid(String, String),
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError::Read(path.display().to_string(), e))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, ScenarioError> {
        let s: Self =
            toml::from_str(text).map_err(|e| ScenarioError::Parse(origin.to_owned(), e))?;
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<(), ScenarioError> {
        let bad = |m: String| Err(ScenarioError::Invalid(self.name.clone(), m));
        if self.nodes == 0 || self.nodes > 256 {
            return bad(format!("nodes must be 1 to 256, not {}", self.nodes));
        }
        let in_range = |n: usize| n < self.nodes;
        for e in &self.events {
            let nodes: Vec<usize> = match &e.action {
                Action::Push { node, .. }
                | Action::Tag { node, .. }
                | Action::Delete { node, .. }
                | Action::Crash { node }
                | Action::Restart { node }
                | Action::Silence { node } => vec![*node],
                Action::Clog { a, b, .. } => vec![*a, *b],
                Action::Partition { groups } => groups.iter().flatten().copied().collect(),
                Action::Heal | Action::Loss { .. } => vec![],
            };
            if let Some(n) = nodes.into_iter().find(|n| !in_range(*n)) {
                return bad(format!(
                    "event at {}s names node {n}, past the last node",
                    e.at_secs
                ));
            }
        }
        if let Some(n) = self
            .bootstrap
            .iter()
            .chain(&self.hostile)
            .find(|n| !in_range(**n))
        {
            return bad(format!("node {n} does not exist"));
        }
        if self.security == Security::Plaintext && !self.hostile.is_empty() {
            return bad(
                "security = \"plaintext\" cannot have hostile nodes: without noise a peer's \
                 identity is not proven"
                    .to_owned(),
            );
        }
        if self.max_connections == Some(0) {
            return bad("max_connections must be at least 1".to_owned());
        }
        Ok(())
    }

    /// When the last fault heals: the last partition, clog end, crash, restart or silence (a
    /// silenced node never recovers: the others are judged from when it fell silent).
    pub fn last_fault_end(&self) -> f64 {
        self.events
            .iter()
            .map(|e| match &e.action {
                Action::Clog { for_secs, .. } => e.at_secs + for_secs,
                Action::Heal
                | Action::Restart { .. }
                | Action::Partition { .. }
                | Action::Crash { .. }
                | Action::Silence { .. } => e.at_secs,
                _ => 0.0,
            })
            .fold(0.0, f64::max)
    }

    /// When the last change (push, tag, delete) happens.
    pub fn last_change(&self) -> f64 {
        self.events
            .iter()
            .filter(|e| {
                matches!(
                    e.action,
                    Action::Push { .. } | Action::Tag { .. } | Action::Delete { .. }
                )
            })
            .map(|e| e.at_secs)
            .fold(0.0, f64::max)
    }
}
