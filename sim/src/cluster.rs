//! A cluster of real nodes in one process. Under the wall clock each node runs in its own tokio
//! runtime, so a crash is exactly "every task of that node stops now"; a restart opens the same
//! data dir again. Under virtual time every node shares the run's paused runtime (`clock.rs`).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use http_body_util::BodyExt;
use niso_node::{
    Node, NodeConfig,
    config::{BlobMode, ReplicateRule, ShareRule},
    p2p::{
        TransportChoice,
        transport::{Security, secure},
    },
    store::{Durability, Store},
};
use niso_protocol::{Digest, record::NodeSecret};
use rand::{Rng, RngExt, SeedableRng};
use tokio::runtime::{Handle, Runtime};
use tower::ServiceExt;

use crate::{
    clock::Clock,
    hostile::Hostile,
    network::{Network, address},
    scenario::Scenario,
};

/// One node of the cluster.
pub struct SimNode {
    pub index: usize,
    pub secret: [u8; 32],
    pub peer_id: String,
    pub hostile: bool,
    pub config: NodeConfig,
    running: Option<Running>,
}

struct Running {
    /// The node's own runtime, under the wall clock; `None` when it shares the run's.
    runtime: Option<Runtime>,
    handle: Handle,
    node: Option<Node>,
    admin: String,
    _hostile: Option<Hostile>,
}

pub struct Cluster {
    pub net: Network,
    clock: Clock,
    security: Security,
    pub nodes: Vec<SimNode>,
    pub root: PathBuf,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The node that, in test builds, skips signature checks (to show the checks catch it).
    pub broken_node: Option<usize>,
    /// The clock to run on; `None` lets the scenario decide (`Clock::for_scenario`).
    pub clock: Option<Clock>,
}

fn node_secret(seed: u64, index: usize) -> [u8; 32] {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        seed.wrapping_mul(1_000_003).wrapping_add(index as u64),
    );
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    bytes
}

pub fn peer_id_of(secret: &[u8; 32]) -> String {
    niso_node::identity::peer_id(&NodeSecret::from_bytes(secret).origin())
}

/// `node:N` → node N's peer id; anything else unchanged.
fn resolve(peer: &str, ids: &[String]) -> anyhow::Result<String> {
    match peer.strip_prefix("node:") {
        Some(n) => {
            let n: usize = n.parse().context("`node:` needs a number")?;
            ids.get(n)
                .cloned()
                .with_context(|| format!("node {n} does not exist"))
        }
        None => Ok(peer.to_owned()),
    }
}

impl Cluster {
    pub fn new(
        scenario: &Scenario,
        seed: u64,
        root: &Path,
        options: Options,
    ) -> anyhow::Result<Self> {
        let link = crate::network::LinkSpec {
            latency: Duration::from_secs_f64(scenario.link.latency_ms / 1000.0),
            jitter: Duration::from_secs_f64(scenario.link.jitter_ms / 1000.0),
            loss: scenario.link.loss,
        };
        let net = Network::new(scenario.nodes, seed, link, scenario.uplink_mbit);
        let secrets: Vec<[u8; 32]> = (0..scenario.nodes).map(|i| node_secret(seed, i)).collect();
        let ids: Vec<String> = secrets.iter().map(peer_id_of).collect();
        let mut nodes = Vec::new();
        for (i, secret) in secrets.iter().enumerate() {
            let mut config = NodeConfig {
                data_dir: root.join(format!("node{i}")),
                // One process holds every node and outlives them: what a node wrote is in the
                // page cache whatever befalls it, so waiting for the disk only costs the host.
                durability: Durability::Cached,
                ..NodeConfig::default()
            };
            // Every simulated node is a peer, whatever its rules.
            config.p2p.enabled = Some(true);
            config.p2p.listen = vec![address(i).to_string()];
            config.p2p.mdns = false;
            config.p2p.sync_interval_secs = scenario.sync_interval_secs;
            if let Some(max) = scenario.max_connections {
                config.p2p.max_connections = max;
            }
            let mut dial: Vec<usize> = scenario.bootstrap.clone();
            if i > 0 {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                    seed.wrapping_mul(7_919).wrapping_add(i as u64),
                );
                for _ in 0..scenario.bootstrap_random.min(i) {
                    let b = loop {
                        let b = rng.random_range(0..i);
                        if !dial.contains(&b) || dial.len() >= i {
                            break b;
                        }
                    };
                    dial.push(b);
                }
            }
            dial.sort_unstable();
            dial.dedup();
            config.p2p.bootstrap = dial
                .iter()
                .filter(|&&b| b != i)
                .map(|&b| format!("{}/p2p/{}", address(b), ids[b]))
                .collect();
            for group in scenario.rules.iter().filter(|g| g.nodes.contains(i)) {
                for r in &group.replicate {
                    config.replicate.push(ReplicateRule {
                        from: resolve(&r.from, &ids)?,
                        packages: r.packages.clone(),
                        blobs: if r.blobs == "lazy" {
                            BlobMode::Lazy
                        } else {
                            BlobMode::Eager
                        },
                    });
                }
                for r in &group.share {
                    config.share.push(ShareRule {
                        to: resolve(&r.to, &ids)?,
                        packages: r.packages.clone(),
                    });
                }
            }
            if options.broken_node == Some(i) {
                #[cfg(feature = "fault-injection")]
                {
                    config.faults.skip_signature_checks = true;
                }
                #[cfg(not(feature = "fault-injection"))]
                bail!("a broken node needs a build with the `fault-injection` feature");
            }
            nodes.push(SimNode {
                index: i,
                secret: *secret,
                peer_id: ids[i].clone(),
                hostile: scenario.hostile.contains(&i),
                config,
                running: None,
            });
        }
        Ok(Self {
            net,
            clock: options.clock.unwrap_or(Clock::Real),
            security: scenario.security,
            nodes,
            root: root.to_owned(),
        })
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].running.is_some()
    }

    /// Starts node `i` (again, after a crash) from its data dir.
    pub async fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &self.nodes[i];
        if n.running.is_some() {
            return Ok(());
        }
        let runtime = match self.clock {
            Clock::Real => Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name(format!("node{i}"))
                    .enable_all()
                    .build()?,
            ),
            Clock::Virtual => None,
        };
        let handle = runtime
            .as_ref()
            .map_or_else(Handle::current, |r| r.handle().clone());
        if n.hostile {
            let victims: Vec<String> = self
                .nodes
                .iter()
                .filter(|m| !m.hostile)
                .map(|m| m.peer_id.clone())
                .collect();
            let honest_origin = self.nodes[0].secret;
            let hostile = Hostile::start(
                &handle,
                self.net.clone(),
                i,
                n.secret,
                n.config.p2p.clone(),
                honest_origin,
                victims,
            )
            .await?;
            self.nodes[i].running = Some(Running {
                runtime,
                handle,
                node: None,
                admin: String::new(),
                _hostile: Some(hostile),
            });
            return Ok(());
        }
        std::fs::create_dir_all(&n.config.data_dir)?;
        niso_node_key(&n.config.data_dir, &n.secret)?;
        let config = n.config.clone();
        let net = self.net.clone();
        let security = self.security;
        // The previous incarnation's database closes a moment after its runtime is gone.
        let mut last = None;
        for _ in 0..200 {
            let cfg = config.clone();
            let net = net.clone();
            let transport = TransportChoice::Custom(Box::new(move |key| {
                secure(net.transport(i), key, security).map_err(|e| Box::new(e) as _)
            }));
            match handle.spawn(Node::open_with(cfg, transport)).await? {
                Ok(node) => {
                    let admin = std::fs::read_to_string(config.data_dir.join("admin.key"))?
                        .trim()
                        .to_owned();
                    self.nodes[i].running = Some(Running {
                        runtime,
                        handle,
                        node: Some(node),
                        admin,
                        _hostile: None,
                    });
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("node {i} did not start: {:?}", last)
    }

    /// Kills node `i`: every task stops at once, nothing is flushed. On a shared runtime
    /// (virtual time) only the node's long-lived tasks can be stopped; that is why timelines
    /// that crash nodes run on the wall clock, and this serves the end of a run there.
    pub fn crash(&mut self, i: usize) {
        if let Some(running) = self.nodes[i].running.take() {
            self.net.down(i);
            if let Some(node) = &running.node {
                node.shutdown();
            }
            drop(running.node);
            if let Some(runtime) = running.runtime {
                runtime.shutdown_background();
            }
        }
    }

    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes[i].running.as_ref().and_then(|r| r.node.as_ref())
    }

    pub fn store(&self, i: usize) -> Option<Store> {
        self.node(i).map(|n| n.state().store.clone())
    }

    /// Sends one request through node `i`'s HTTP router, on that node's runtime.
    async fn call(
        &self,
        i: usize,
        method: Method,
        path: String,
        body: Body,
        headers: Vec<(&'static str, String)>,
    ) -> anyhow::Result<(StatusCode, Vec<u8>)> {
        let running = self.nodes[i].running.as_ref().context("node is down")?;
        let node = running.node.as_ref().context("node is hostile")?;
        let router = node.router();
        let admin = running.admin.clone();
        let fut = async move {
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", format!("Bearer {admin}"));
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let response = router.oneshot(req.body(body)?).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes().to_vec();
            Ok::<_, anyhow::Error>((status, bytes))
        };
        running.handle.spawn(fut).await?
    }

    /// Pushes a package file through node `i`'s API, as a client would.
    pub async fn push(&self, i: usize, name: &str, file: &Path) -> anyhow::Result<Digest> {
        let (status, body) = self
            .call(
                i,
                Method::POST,
                format!("/v1/packages/{name}/uploads"),
                Body::empty(),
                vec![],
            )
            .await?;
        if status != StatusCode::CREATED {
            bail!(
                "upload refused: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        let id = serde_json::from_slice::<serde_json::Value>(&body)?["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let f = tokio::fs::File::open(file).await?;
        let stream = tokio_util::io::ReaderStream::with_capacity(f, 1 << 20);
        let (status, body) = self
            .call(
                i,
                Method::PATCH,
                format!("/v1/uploads/{id}"),
                Body::from_stream(stream),
                vec![("upload-offset", "0".into())],
            )
            .await?;
        if status != StatusCode::OK {
            bail!("upload failed: {status} {}", String::from_utf8_lossy(&body));
        }
        let digest = niso_node::offload::spawn({
            let file = file.to_owned();
            move || niso_node::store::hash_file(&file)
        })
        .await??
        .0;
        let (status, body) = self
            .call(
                i,
                Method::PUT,
                format!("/v1/uploads/{id}?digest={digest}"),
                Body::empty(),
                vec![],
            )
            .await?;
        if !status.is_success() {
            bail!(
                "publish failed: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(digest)
    }

    pub async fn tag(&self, i: usize, name: &str, tag: &str, version: &str) -> anyhow::Result<()> {
        let body = Body::from(serde_json::json!({ "version": version }).to_string());
        let (status, body) = self
            .call(
                i,
                Method::PUT,
                format!("/v1/packages/{name}/tags/{tag}"),
                body,
                vec![("content-type", "application/json".into())],
            )
            .await?;
        if !status.is_success() {
            bail!("tag failed: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }

    pub async fn delete(&self, i: usize, name: &str, version: &str) -> anyhow::Result<()> {
        let (status, body) = self
            .call(
                i,
                Method::DELETE,
                format!("/v1/packages/{name}/versions/{version}"),
                Body::empty(),
                vec![],
            )
            .await?;
        if !status.is_success() {
            bail!("delete failed: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }

    /// Stops every node.
    pub fn shutdown(&mut self) {
        for i in 0..self.nodes.len() {
            self.crash(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Writes the seed-derived identity into the data dir before the node's first start.
fn niso_node_key(dir: &Path, secret: &[u8; 32]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let path = dir.join("node.key");
    if !path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?
            .write_all(secret)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(extra: &str) -> anyhow::Result<Cluster> {
        let text = format!("name = \"t\"\nnodes = 3\n{extra}");
        let scenario = Scenario::parse(&text, "test")?;
        let dir = tempfile::tempdir()?;
        Cluster::new(&scenario, 1, dir.path(), Options::default())
    }

    #[test]
    fn a_scenario_sets_every_node_s_connection_limit_or_leaves_the_default() {
        let limits = |c: Cluster| -> Vec<u32> {
            c.nodes
                .iter()
                .map(|n| n.config.p2p.max_connections)
                .collect()
        };
        assert_eq!(limits(cluster("max_connections = 5").unwrap()), [5, 5, 5]);
        let default = niso_node::config::P2pConfig::default().max_connections;
        assert_eq!(limits(cluster("").unwrap()), [default; 3]);
        let err = Scenario::parse("name = \"t\"\nnodes = 3\nmax_connections = 0", "test");
        assert!(err.unwrap_err().to_string().contains("max_connections"));
    }

    #[test]
    fn a_scenario_picks_the_connections_security_noise_unless_told() {
        assert_eq!(cluster("").unwrap().security, Security::Noise);
        let plain = cluster("security = \"plaintext\"").unwrap();
        assert_eq!(plain.security, Security::Plaintext);
        let err = Scenario::parse("name = \"t\"\nnodes = 3\nsecurity = \"tls\"", "test");
        let err = format!("{:#}", anyhow::Error::from(err.unwrap_err()));
        assert!(err.contains("unknown variant `tls`"), "{err}");
        let hostile = "name = \"t\"\nnodes = 3\nsecurity = \"plaintext\"\nhostile = [2]";
        let err = Scenario::parse(hostile, "test").unwrap_err().to_string();
        assert!(err.contains("hostile"), "{err}");
    }

    /// Node 1 of a plaintext scenario takes a plaintext handshake (and the peer it proves is
    /// node 1) and refuses noise: the scenario's choice reaches the transport.
    #[test]
    fn a_node_listens_with_the_scenario_s_security() {
        use libp2p::{
            Transport as _,
            core::{
                Endpoint,
                transport::{DialOpts, PortUse},
            },
        };
        let text = "name = \"t\"\nnodes = 2\nsecurity = \"plaintext\"";
        let scenario = Scenario::parse(text, "test").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster::new(&scenario, 1, dir.path(), Options::default()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            cluster.start(1).await.unwrap();
            let key = libp2p::identity::Keypair::ed25519_from_bytes([9; 32]).unwrap();
            let dial = |security| {
                secure(cluster.net.transport(0), &key, security)
                    .unwrap()
                    .dial(
                        address(1),
                        DialOpts {
                            role: Endpoint::Dialer,
                            port_use: PortUse::New,
                        },
                    )
                    .unwrap()
            };
            let (peer, _muxer) = dial(Security::Plaintext).await.unwrap();
            assert_eq!(peer.to_string(), cluster.nodes[1].peer_id);
            dial(Security::Noise).await.unwrap_err();
        });
        cluster.shutdown();
    }
}
