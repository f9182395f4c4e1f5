//! A hostile node: it forges records in the name of an honest origin, offers corrupt bytes for
//! every blob anyone asks it for, and floods gossip with garbage. Honest nodes must refuse all
//! of it and block it; a node that does not is caught by the simulator's safety checks.

use std::time::Duration;

use futures::AsyncWriteExt;
use niso_node::{
    config::P2pConfig,
    p2p::{
        P2p, TransportChoice, frames,
        transport::{Security, secure},
    },
    trust::Trust,
};
use niso_protocol::{
    Arch, Digest, PackageName,
    federation::{BlobRequest, BlobResponse, SyncMessage, SyncPage},
    pack::Packer,
    record::{ManifestBody, NodeSecret, Record, RecordBody},
};
use tokio::runtime::Handle;

use crate::network::Network;

/// Package names the hostile node forges; a broken node that accepts one is caught.
pub const FORGED_PREFIX: &str = "forged-";

pub struct Hostile {
    _p2p: P2p,
}

/// A valid package whose manifest the hostile node signs with the wrong key.
fn forged_package(i: u64) -> (String, Vec<u8>) {
    let name = format!("{FORGED_PREFIX}{i}");
    let meta = format!("name = \"{name}\"\nversion = \"1.0.0\"\narch = \"any\"\n");
    let payload = format!("forged payload {i}");
    let bytes = Packer::new(Vec::new(), meta.as_bytes())
        .and_then(|mut p| {
            p.add_file("payload", false, payload.len() as u64, payload.as_bytes())?;
            p.finish()
        })
        .unwrap_or_default();
    (name, bytes)
}

impl Hostile {
    pub async fn start(
        runtime: &Handle,
        net: Network,
        index: usize,
        secret: [u8; 32],
        config: P2pConfig,
        honest_origin: [u8; 32],
        _victims: Vec<String>,
    ) -> anyhow::Result<Self> {
        let transport = TransportChoice::Custom(Box::new(move |key| {
            // Scenarios with hostile nodes run on noise (`Scenario::check`).
            secure(net.transport(index), key, Security::Noise).map_err(|e| Box::new(e) as _)
        }));
        let (p2p, _events, _tx, _task, incoming) = runtime
            .spawn(async move { P2p::start(secret, &config, Trust::default(), transport).await })
            .await??;
        // Records claiming to come from the honest origin, with a signature from another key.
        let honest = NodeSecret::from_bytes(&honest_origin).origin();
        let liar = NodeSecret::from_bytes(&secret);
        let forged: Vec<(Vec<u8>, Vec<u8>)> = (0..3u64)
            .map(|i| {
                let (name, bytes) = forged_package(i);
                let body = RecordBody::Manifest(ManifestBody {
                    name: PackageName::new(name)
                        .unwrap_or_else(|_| unreachable!("valid by construction")),
                    version: semver::Version::new(1, 0, 0),
                    arch: Arch::any(),
                    digest: Digest::of(&bytes),
                    size: bytes.len() as u64,
                    description: String::new(),
                });
                let mut record = Record::sign(&liar, 1_000_000 + i, 1, body);
                record.origin = honest;
                (record.to_bytes(), bytes)
            })
            .collect();

        let mut sync_in = incoming.sync;
        let page: Vec<Vec<u8>> = forged
            .iter()
            .map(|(r, _)| r.clone())
            .chain([b"not a record".to_vec()])
            .collect();
        runtime.spawn(async move {
            while let Some((_, mut stream)) = sync_in.next().await {
                if let Ok(SyncMessage::Pull { .. }) =
                    frames::read_frame::<SyncMessage>(&mut stream, 65536).await
                {
                    let answer = SyncPage {
                        records: page.clone(),
                        next: 1,
                        more: false,
                        share_fingerprint: 0,
                        head: 1,
                    };
                    let _ = frames::write_frame(&mut stream, &answer).await;
                }
                let _ = stream.close().await;
            }
        });

        let mut blobs_in = incoming.blobs;
        runtime.spawn(async move {
            while let Some((_, mut stream)) = blobs_in.next().await {
                let Ok(req) = frames::read_frame::<BlobRequest>(&mut stream, 65536).await else {
                    continue;
                };
                // Its own forged packages it serves correctly (so only signature checks stand
                // in the way); anything else it answers with garbage.
                match forged
                    .iter()
                    .find(|(_, b)| *Digest::of(b).as_bytes() == req.digest)
                {
                    Some((_, bytes)) => {
                        let ob = bao_tree::io::outboard::PreOrderMemOutboard::create(
                            bytes,
                            niso_node::blobs::wire::BLOCK,
                        );
                        let ranges = bao_tree::ChunkRanges::from(
                            bao_tree::ChunkNum(req.chunk_ranges.first().map(|r| r.0).unwrap_or(0))
                                ..bao_tree::ChunkNum(
                                    req.chunk_ranges.first().map(|r| r.1).unwrap_or(0),
                                ),
                        );
                        let mut wire = Vec::new();
                        if bao_tree::io::sync::encode_ranges_validated(
                            &bytes[..],
                            &ob,
                            &ranges,
                            &mut wire,
                        )
                        .is_ok()
                        {
                            let _ = frames::write_frame(
                                &mut stream,
                                &BlobResponse::Ok {
                                    size: bytes.len() as u64,
                                },
                            )
                            .await;
                            let _ = stream.write_all(&wire).await;
                        }
                    }
                    None => {
                        let size = req
                            .chunk_ranges
                            .first()
                            .map(|r| r.1 * 1024)
                            .unwrap_or(1 << 20);
                        let _ = frames::write_frame(&mut stream, &BlobResponse::Ok { size }).await;
                        let _ = stream.write_all(&vec![0x66u8; 64 * 1024]).await;
                    }
                }
                let _ = stream.close().await;
            }
        });

        let flooder = p2p.clone();
        runtime.spawn(async move {
            let mut n = 0u64;
            loop {
                n += 1;
                let _ = flooder
                    .publish_raw(format!("garbage {n}").into_bytes())
                    .await;
                for peer in flooder.connected_peers() {
                    let _ = niso_node::p2p::sync::poke(&flooder, peer).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(Self { _p2p: p2p })
    }
}
