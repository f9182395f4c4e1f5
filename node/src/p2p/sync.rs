//! The sync protocol: a peer pulls pages of records after a position in our log, filtered by
//! what we share with it and what it wants; a poke asks a peer to pull from us now.
//!
//! Gossip loses messages; this is the anti-entropy that makes every node converge: each node
//! keeps, per peer, the position in that peer's log it has pulled to.

use std::sync::Arc;

use futures::AsyncWriteExt;
use globset::{Glob, GlobSet, GlobSetBuilder};
use libp2p::{PeerId, StreamProtocol};
use niso_protocol::{
    federation::{MAX_FRAME, MAX_PAGE, SYNC_PROTOCOL, SyncMessage, SyncPage},
    record::Record,
};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::{
    OpenError, P2p, P2pEvent, Reach,
    frames::{
        Admission, SERVING_WAIT, SYNC_SERVING, SYNC_STREAMS, WireError, read_frame, read_request,
        strike_bad_request, write_frame,
    },
};
use crate::{identity::peer_id as origin_peer_id, node::NodeState};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new(SYNC_PROTOCOL);

/// The most `(peer, globs)` pairs a request may state.
const MAX_WANTS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("could not open a sync stream")]
    Open(#[from] OpenError),
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl SyncError {
    /// Whether the peer broke the protocol (oversized or malformed frames), as opposed to
    /// being unreachable or slow.
    pub fn is_misbehaviour(&self) -> bool {
        matches!(
            self,
            Self::Wire(WireError::TooLarge(_) | WireError::Frame(_))
        )
    }
}

/// A peer's stated wants, compiled once per request.
struct Wants(Vec<(String, GlobSet)>);

impl Wants {
    fn compile(raw: &[(String, Vec<String>)]) -> Self {
        let mut out = Vec::new();
        for (peer, globs) in raw.iter().take(MAX_WANTS) {
            let mut b = GlobSetBuilder::new();
            for g in globs.iter().take(MAX_WANTS) {
                if let Ok(g) = Glob::new(g) {
                    b.add(g);
                }
            }
            if let Ok(set) = b.build() {
                out.push((peer.clone(), set));
            }
        }
        Self(out)
    }

    fn allows(&self, origin: &str, package: &str) -> bool {
        self.0
            .iter()
            .any(|(p, set)| (p == "*" || p == origin) && set.is_match(package))
    }
}

/// Serves sync requests until the protocol is dropped. Streams are admitted per peer, then
/// against the global backstop (see `frames`); a pull takes a serving slot only once its
/// request has arrived, so streams that never send one cost a peer strikes, not others
/// their sync.
pub async fn serve(
    state: Arc<NodeState>,
    mut incoming: crate::p2p::inbound::InboundStreams,
    events: tokio::sync::mpsc::Sender<P2pEvent>,
) {
    let limits = &state.config.p2p.limits;
    let admission = Admission::new(SYNC_PROTOCOL, limits.sync_per_peer, SYNC_STREAMS);
    let deadline = limits.request_timeout();
    let serving = Arc::new(Semaphore::new(SYNC_SERVING));
    while let Some((peer, mut stream)) = incoming.next().await {
        // Dropping the stream resets it at once: the peer learns, and holds nothing.
        let Some(admitted) = admission.admit(peer) else {
            continue;
        };
        let state = state.clone();
        let events = events.clone();
        let serving = serving.clone();
        // `instrument`, not `span.enter()`: a guard held across an await leaks the span into
        // whatever else runs on the thread.
        let span = tracing::debug_span!("sync-serve", %peer);
        tokio::spawn(
            async move {
                let _admitted = admitted;
                let request = match read_request::<SyncMessage>(&mut stream, deadline).await {
                    Ok(r) => r,
                    Err(e) => {
                        // Struck before the stream drops, so the peer sees its stream end only
                        // after the strike is on its way.
                        strike_bad_request(state.p2p.as_ref(), peer, SYNC_PROTOCOL, &e).await;
                        return;
                    }
                };
                if let Err(e) = handle(&state, &events, &serving, peer, stream, request).await {
                    tracing::debug!(%peer, error = %e, "sync request failed");
                }
            }
            .instrument(span),
        );
    }
}

async fn handle(
    state: &NodeState,
    events: &tokio::sync::mpsc::Sender<P2pEvent>,
    serving: &Arc<Semaphore>,
    peer: PeerId,
    mut stream: libp2p::Stream,
    message: SyncMessage,
) -> Result<(), WireError> {
    match message {
        SyncMessage::Poke => {
            let _ = events.try_send(P2pEvent::Poked(peer));
        }
        SyncMessage::Pull {
            after,
            limit,
            wants,
        } => {
            let Ok(Ok(_slot)) =
                tokio::time::timeout(SERVING_WAIT, serving.clone().acquire_owned()).await
            else {
                // Busy: the requester retries on its next round.
                tracing::debug!(%peer, "every sync serving slot busy, dropping a pull");
                return Ok(());
            };
            let limit = limit.clamp(1, MAX_PAGE) as usize;
            let wants = Wants::compile(&wants);
            let peer_s = peer.to_string();
            let filter = |r: &Record| {
                let package = r.body.package().as_str();
                state.trust.shares_with(&peer_s, package)
                    && wants.allows(&origin_peer_id(&r.origin), package)
            };
            let (records, next, more) = state
                .store
                .records_after(after, limit, limit * 20, &filter)
                .map_err(|e| WireError::Io(std::io::Error::other(e)))?;
            let page = SyncPage {
                records: records.iter().map(Record::to_bytes).collect(),
                next,
                more,
                share_fingerprint: state.trust.share_fingerprint(&peer_s),
                head: state.store.log_position().max(next),
            };
            write_frame(&mut stream, &page).await?;
        }
    }
    let _ = stream.close().await;
    Ok(())
}

/// Pulls one page from `peer`.
pub async fn pull(
    p2p: &P2p,
    peer: PeerId,
    reach: Reach,
    after: u64,
    wants: Vec<(String, Vec<String>)>,
) -> Result<SyncPage, SyncError> {
    let mut stream = open(p2p, peer, reach).await?;
    write_frame(
        &mut stream,
        &SyncMessage::Pull {
            after,
            limit: MAX_PAGE,
            wants,
        },
    )
    .await?;
    let page = read_frame(&mut stream, MAX_FRAME).await?;
    let _ = stream.close().await;
    Ok(page)
}

/// Asks `peer` to pull from us.
pub async fn poke(p2p: &P2p, peer: PeerId) -> Result<(), SyncError> {
    let mut stream = open(p2p, peer, Reach::Connected).await?;
    write_frame(&mut stream, &SyncMessage::Poke).await?;
    let _ = stream.close().await;
    Ok(())
}

async fn open(p2p: &P2p, peer: PeerId, reach: Reach) -> Result<libp2p::Stream, SyncError> {
    match tokio::time::timeout(
        super::frames::FRAME_TIMEOUT,
        p2p.open_stream(peer, PROTOCOL, reach),
    )
    .await
    {
        Ok(r) => Ok(r?),
        Err(_) => Err(WireError::Timeout.into()),
    }
}
