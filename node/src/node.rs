//! A running node: its state, start-up (data dir, identity, first admin key), background
//! tasks, and the HTTP server.

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::Router;
use niso_protocol::scope::Scope;
use tokio::net::TcpListener;

use crate::{
    api_keys::issue_key,
    blobs::{Fetcher, serve::Serving},
    config::NodeConfig,
    failpoint::Failpoints,
    gossip_room::GossipRoom,
    identity::{self, IdentityError, peer_id},
    last_used::LastUsed,
    metrics::Metrics,
    p2p::{P2p, P2pError, TransportChoice},
    replication::SyncGate,
    store::{Store, StoreError},
    trust::{Trust, TrustError},
};

/// File the first admin key is written to, in the data dir.
pub const ADMIN_KEY_FILE: &str = "admin.key";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no data directory is configured")]
    NoDataDir,
    #[error("could not prepare data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("could not open the store")]
    Store(#[from] StoreError),
    #[error("could not write the admin key to {path}")]
    AdminKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
    #[error("invalid [[replicate]] or [[share]] rule")]
    Trust(#[from] TrustError),
    #[error("could not start peer-to-peer networking")]
    P2p(#[from] P2pError),
    /// Named apart from [`NodeError::P2p`] because it is the operator's to fix (another node
    /// or program holds the port), not a fault of the node.
    #[error("p2p address {addr} is already in use")]
    P2pAddrInUse {
        addr: String,
        #[source]
        source: P2pError,
    },
}

impl NodeError {
    fn from_p2p(e: P2pError) -> Self {
        let in_use = match &e {
            P2pError::Listen { addr, source } => {
                let first: &(dyn std::error::Error + 'static) = source.as_ref();
                std::iter::successors(Some(first), |c| c.source())
                    .any(|c| {
                        c.downcast_ref::<std::io::Error>()
                            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
                    })
                    .then(|| addr.clone())
            }
            _ => None,
        };
        match in_use {
            Some(addr) => Self::P2pAddrInUse { addr, source: e },
            None => Self::P2p(e),
        }
    }
}

/// Everything request handlers and background tasks share.
#[derive(Debug)]
pub struct NodeState {
    pub config: NodeConfig,
    pub store: Store,
    pub metrics: Metrics,
    pub last_used: LastUsed,
    pub failpoints: Failpoints,
    pub http: reqwest::Client,
    pub peer_id: String,
    pub trust: Trust,
    /// The libp2p side, when p2p is enabled.
    pub p2p: Option<P2p>,
    pub fetcher: Fetcher,
    pub(crate) serving: Arc<Serving>,
    pub sync_gate: SyncGate,
    /// Room for gossiped records being taken in.
    pub gossip_room: Arc<GossipRoom>,
    /// Signed-in browsers of the web UI.
    pub ui_sessions: crate::ui::Sessions,
    /// The last GC run since start, for the web UI's node page.
    pub last_gc: crate::last_gc::LastGc,
    busy_uploads: Mutex<HashSet<String>>,
}

/// Marks an upload as in use by one request; dropping it frees the upload.
#[derive(Debug)]
pub struct UploadLease<'a> {
    state: &'a NodeState,
    id: String,
}

impl Drop for UploadLease<'_> {
    fn drop(&mut self) {
        let mut busy = self
            .state
            .busy_uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        busy.remove(&self.id);
    }
}

impl NodeState {
    /// Takes the upload for this request, or `None` if another request holds it.
    pub fn lease_upload(&self, id: &str) -> Option<UploadLease<'_>> {
        let mut busy = self.busy_uploads.lock().unwrap_or_else(|p| p.into_inner());
        busy.insert(id.to_owned()).then(|| UploadLease {
            state: self,
            id: id.to_owned(),
        })
    }

    /// Writes buffered "last used" times to the database.
    pub async fn flush_last_used(&self) {
        let pending = self.last_used.take();
        if pending.is_empty() {
            return;
        }
        if let Err(e) = self.store.touch_keys(pending).await {
            tracing::warn!(error = %e, "could not record key use times");
        }
    }

    pub fn refresh_gauges(&self) {
        if let Ok((packages, versions)) = self.store.counts() {
            self.metrics
                .packages
                .set(i64::try_from(packages).unwrap_or(i64::MAX));
            self.metrics
                .versions
                .set(i64::try_from(versions).unwrap_or(i64::MAX));
        }
    }
}

/// A node with its store open, ready to serve.
#[derive(Debug, Clone)]
pub struct Node {
    state: Arc<NodeState>,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Node {
    /// Opens the data dir (creating it and the node identity on first start) and makes sure an
    /// admin key exists.
    pub async fn open(config: NodeConfig) -> Result<Self, NodeError> {
        Self::open_with(config, TransportChoice::Tcp).await
    }

    /// Like [`Node::open`], with the p2p side on the given transport.
    pub async fn open_with(
        config: NodeConfig,
        transport: TransportChoice,
    ) -> Result<Self, NodeError> {
        if config.data_dir.as_os_str().is_empty() {
            return Err(NodeError::NoDataDir);
        }
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| NodeError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        restrict_dir(&data_dir).map_err(|source| NodeError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let secret = identity::load_or_create(&data_dir)?;
        let secret_bytes = secret.to_bytes();
        let peer_id = peer_id(&secret.origin());
        let trust = Trust::new(&config.replicate, &config.share)?;
        let failpoints = Failpoints::new(&config.failpoints);
        let store = Store::open_with_cache(
            &data_dir,
            secret,
            failpoints.clone(),
            config.limits.db_cache_bytes,
            config.durability,
        )?;
        let mut tasks = Vec::new();
        let (p2p, events) = if config.p2p_enabled() {
            let (p2p, events, events_tx, event_loop, incoming) =
                P2p::start(secret_bytes, &config.p2p, trust.clone(), transport)
                    .await
                    .map_err(NodeError::from_p2p)?;
            tasks.push(event_loop);
            (Some(p2p), Some((events, events_tx, incoming)))
        } else {
            (None, None)
        };
        let metrics = Metrics::default();
        let state = Arc::new(NodeState {
            gossip_room: Arc::new(GossipRoom::new(metrics.gossip_dropped.clone())),
            p2p,
            fetcher: Fetcher::default(),
            serving: Arc::new(Serving::new(crate::blobs::BlobLimits::default())),
            sync_gate: SyncGate::default(),
            failpoints,
            ui_sessions: crate::ui::Sessions::new(&config.ui),
            last_gc: crate::last_gc::LastGc::default(),
            config,
            store,
            metrics,
            last_used: LastUsed::default(),
            http: crate::mirror::http_client(),
            peer_id,
            trust,
            busy_uploads: Mutex::default(),
        });
        ensure_admin_key(&state).await?;
        state.refresh_gauges();
        tasks.push(tokio::spawn(recover_writes(state.clone())).abort_handle());
        tasks.push(tokio::spawn(crate::upload_expiry::run(state.clone())).abort_handle());
        crate::blobs::sweep_partials(&state);
        if let Some((events, events_tx, incoming)) = events {
            let (sync, blobs) = (incoming.sync, incoming.blobs);
            tasks.push(
                tokio::spawn(crate::p2p::sync::serve(state.clone(), sync, events_tx))
                    .abort_handle(),
            );
            let serve = {
                let state = state.clone();
                async move {
                    crate::blobs::serve::serve(
                        state.clone(),
                        state.serving.clone(),
                        state.p2p.clone(),
                        &state.config.p2p.limits,
                        blobs,
                    )
                    .await;
                }
            };
            tasks.push(tokio::spawn(serve).abort_handle());
            tasks.push(tokio::spawn(crate::replication::run(state.clone(), events)).abort_handle());
        }
        tracing::info!(peer_id = %state.peer_id, data_dir = %data_dir.display(), "node opened");
        Ok(Self {
            state,
            tasks: Arc::new(Mutex::new(tasks)),
        })
    }

    pub fn state(&self) -> &Arc<NodeState> {
        &self.state
    }

    /// Stops the node's background tasks (p2p included), as a crash or shutdown would.
    pub fn shutdown(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }

    /// The HTTP API, without a socket: tests drive it with `tower::ServiceExt::oneshot`.
    pub fn router(&self) -> Router {
        crate::http::router(self.state.clone())
    }

    /// Binds the configured listen address.
    pub async fn bind(&self) -> Result<TcpListener, NodeError> {
        let addr = self.state.config.listen;
        TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Bind { addr, source })
    }

    /// Serves HTTP on `listener` until `shutdown` resolves, then flushes buffered state.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), NodeError> {
        let flusher = tokio::spawn(flush_loop(self.state.clone()));
        let _ = &self.tasks;
        let result =
            crate::http::server::serve(listener, self.router(), self.state.clone(), shutdown)
                .await
                .map_err(NodeError::Serve);
        flusher.abort();
        self.state.flush_last_used().await;
        tracing::info!("node stopped");
        result
    }
}

/// How often a node whose writes fail tries a probe write, so it recovers once space is back
/// without waiting for a client to try.
const WRITE_PROBE_EVERY: Duration = Duration::from_secs(2);

async fn recover_writes(state: Arc<NodeState>) {
    let mut tick = tokio::time::interval(WRITE_PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if state.store.write_health().failing().is_some()
            && let Err(error) = state.store.probe_writes().await
        {
            tracing::debug!(%error, "writes still failing");
        }
    }
}

async fn flush_loop(state: Arc<NodeState>) {
    let every = Duration::from_secs(state.config.keys.last_used_flush_secs.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        state.flush_last_used().await;
        state.refresh_gauges();
    }
}

fn restrict_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// With no working admin key in the store (first start, or every admin key revoked or
/// expired), issues one and writes it to `DATA_DIR/admin.key`, mode 0600. The key itself is
/// never logged.
async fn ensure_admin_key(state: &NodeState) -> Result<(), NodeError> {
    if state.store.has_admin_key()? {
        return Ok(());
    }
    let (key, info) = issue_key(&state.store, "admin".into(), vec![Scope::Admin], None).await?;
    let path = state.config.data_dir.join(ADMIN_KEY_FILE);
    identity::write_secret_file(&path, format!("{}\n", key.expose()).as_bytes()).map_err(
        |source| NodeError::AdminKey {
            path: path.clone(),
            source,
        },
    )?;
    tracing::info!(key_id = %info.id, path = %path.display(), "created admin key");
    Ok(())
}
