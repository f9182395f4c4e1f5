//! Federation between in-process nodes on libp2p's memory transport.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use niso_node::{
    Node, NodeConfig,
    config::{BlobMode, ReplicateRule, ShareRule},
    p2p::TransportChoice,
};
use niso_protocol::Digest;
use serde_json::json;

use crate::support::{TestNode, package};

/// How long replication may take before a test fails.
pub const CONVERGE: Duration = Duration::from_secs(30);

pub async fn mem_node(tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
    TestNode::with_transport(
        |c| {
            c.p2p.listen = vec!["/memory/0".into()];
            c.p2p.mdns = false;
            c.p2p.sync_interval_secs = 1;
            tweak(c);
        },
        TransportChoice::Memory,
    )
    .await
}

pub async fn address(node: &Node) -> String {
    let p2p = node.state().p2p.as_ref().unwrap();
    assert!(p2p.wait_listening(Duration::from_secs(10)).await);
    p2p.listen_addrs().remove(0)
}

pub fn peer_id(node: &Node) -> String {
    node.state().peer_id.clone()
}

/// Dials `to` from `from` and waits until they are connected.
pub async fn connect(from: &Node, to: &Node) {
    let p2p = from.state().p2p.clone().unwrap();
    let target = to.state().p2p.as_ref().unwrap().peer_id;
    p2p.dial(address(to).await.parse().unwrap()).await.unwrap();
    assert!(p2p.wait_connected(&target, CONVERGE).await);
}

/// Waits (on the node's log, with a deadline) until `check` holds.
pub async fn until(node: &Node, what: &str, mut check: impl FnMut() -> bool) {
    let mut log = node.state().store.watch_log();
    // Eager replication applies a manifest only after its blob is stored, so every state
    // worth waiting for is announced by a log change.
    let wait = async {
        while !check() {
            if log.changed().await.is_err() {
                break;
            }
        }
    };
    if tokio::time::timeout(CONVERGE, wait).await.is_err() {
        panic!("timed out waiting for {what}");
    }
}

pub fn has_version(node: &Node, name: &str, version: &str) -> bool {
    node.state().store.versions(name).unwrap().iter().any(|r| {
        r.version.to_string() == version && node.state().store.blobs().contains(&r.digest())
    })
}

#[tokio::test]
async fn push_replicates_to_a_trusting_peer_and_private_stays_home() {
    let a = mem_node(|c| {
        c.share = vec![ShareRule {
            to: "*".into(),
            packages: vec!["public-*".into()],
        }];
    })
    .await;
    let a_addr = address(&a.node).await;
    let a_peer = peer_id(&a.node);
    let b = mem_node(|c| {
        c.p2p.bootstrap = vec![a_addr.clone()];
        c.replicate = vec![ReplicateRule {
            from: a_peer.clone(),
            packages: vec!["*".into()],
            blobs: BlobMode::Eager,
        }];
    })
    .await;
    let k = a.admin.clone();
    let public = package("public-api", "1.0.0", "any", b"shared bytes");
    a.push(&k, "public-api", &public)
        .await
        .expect(StatusCode::CREATED);
    a.push(
        &k,
        "private-api",
        &package("private-api", "1.0.0", "any", b"secret"),
    )
    .await
    .expect(StatusCode::CREATED);
    a.send_json(
        Method::PUT,
        "/v1/packages/public-api/tags/stable",
        Some(&k),
        json!({"version": "1.0.0"}),
    )
    .await
    .expect(StatusCode::OK);

    until(&b.node, "public-api on b", || {
        has_version(&b.node, "public-api", "1.0.0")
    })
    .await;
    until(&b.node, "the tag on b", || {
        b.node
            .state()
            .store
            .tags("public-api")
            .unwrap()
            .contains_key("stable")
    })
    .await;
    // The bytes b serves are the verified blob.
    let blob = b
        .get(
            &format!("/v1/packages/public-api/blobs/{}", Digest::of(&public)),
            Some(&b.admin),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(blob.body, public);
    // The private package never left a, not even its name.
    assert!(
        b.node
            .state()
            .store
            .versions("private-api")
            .unwrap()
            .is_empty()
    );
    let records = b.get("/v1/records?limit=1000", Some(&b.admin)).await.body;
    assert!(!String::from_utf8_lossy(&records).contains("private-api"));
}

/// Incompressible bytes, so a package is as large as its payload.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut out = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

fn served(node: &Node) -> u64 {
    node.state().metrics.p2p_blob_bytes_served.get()
}

pub async fn sharing_origin() -> TestNode {
    mem_node(|c| {
        c.share = vec![ShareRule {
            to: "*".into(),
            packages: vec!["*".into()],
        }];
    })
    .await
}

/// An origin sharing everything and a replica taking it lazily; `bytes` (package
/// `lazy-pkg 1.0.0`) is pushed on the origin and its record, not its blob, is on the replica.
pub async fn lazy_pair(bytes: &[u8]) -> (TestNode, TestNode) {
    let a = sharing_origin().await;
    let a_addr = address(&a.node).await;
    let b = mem_node(|c| {
        c.p2p.bootstrap = vec![a_addr.clone()];
        c.replicate = vec![ReplicateRule {
            from: "*".into(),
            packages: vec!["*".into()],
            blobs: BlobMode::Lazy,
        }];
    })
    .await;
    a.push(&a.admin.clone(), "lazy-pkg", bytes)
        .await
        .expect(StatusCode::CREATED);
    until(&b.node, "the record on b", || {
        !b.node
            .state()
            .store
            .versions("lazy-pkg")
            .unwrap()
            .is_empty()
    })
    .await;
    assert!(
        !b.node.state().store.blobs().contains(&Digest::of(bytes)),
        "lazy: no bytes before the first pull"
    );
    (a, b)
}

#[tokio::test]
async fn lazy_replicas_fetch_on_first_pull_and_stream_it() {
    let bytes = package("lazy-pkg", "1.0.0", "any", &noise(700_000, 1));
    let (a, b) = lazy_pair(&bytes).await;
    let digest = Digest::of(&bytes);
    assert_eq!(served(&a.node), 0);
    let pulled = b
        .get(
            &format!("/v1/packages/lazy-pkg/blobs/{digest}"),
            Some(&b.admin),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(pulled.body, bytes);
    // The response streamed while the fetch ran; joining the fetch waits for it to finish.
    let state = b.node.state().clone();
    state
        .fetcher
        .fetch(&state, "lazy-pkg", digest, bytes.len() as u64, vec![])
        .await
        .unwrap();
    assert!(
        state.store.blobs().contains(&digest),
        "the fetched blob is kept"
    );
    assert!(served(&a.node) >= bytes.len() as u64);
}

#[tokio::test]
async fn a_large_blob_comes_from_several_providers() {
    let a = sharing_origin().await;
    let c = sharing_origin().await;
    let d = sharing_origin().await;
    let bytes = package("big-pkg", "1.0.0", "any", &noise(6 * 1024 * 1024, 2));
    // C and D hold the same bytes (published there too: same digest, other origins).
    for n in [&a, &c, &d] {
        n.push(&n.admin.clone(), "big-pkg", &bytes)
            .await
            .expect(StatusCode::CREATED);
    }
    let addrs = vec![
        address(&a.node).await,
        address(&c.node).await,
        address(&d.node).await,
    ];
    let b = mem_node(|cfg| {
        cfg.p2p.bootstrap = addrs.clone();
        cfg.replicate = vec![ReplicateRule {
            from: peer_id(&a.node),
            packages: vec!["*".into()],
            blobs: BlobMode::Lazy,
        }];
    })
    .await;
    until(&b.node, "the record on b", || {
        !b.node.state().store.versions("big-pkg").unwrap().is_empty()
    })
    .await;
    // Every provider must be connected before the fetch starts, or one serves it all.
    let p2p = b.node.state().p2p.clone().unwrap();
    for n in [&a.node, &c.node, &d.node] {
        assert!(
            p2p.wait_connected(&n.state().p2p.as_ref().unwrap().peer_id, CONVERGE)
                .await
        );
    }
    let pulled = b
        .get(
            &format!("/v1/packages/big-pkg/blobs/{}", Digest::of(&bytes)),
            Some(&b.admin),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(pulled.body, bytes);
    let (from_a, from_c, from_d) = (served(&a.node), served(&c.node), served(&d.node));
    assert!(
        from_c > 0 && from_d > 0,
        "several providers served at once: c {from_c}, d {from_d}"
    );
    assert!(from_a + from_c + from_d >= bytes.len() as u64);
    // The origin is asked only for what the others lack: here, nothing.
    assert_eq!(from_a, 0, "the origin was spared");
}

/// Fetches a fresh 4 MiB package on a new node whose `partial/` was first filled by
/// `prepare(dir, digest, bytes)`; returns the bytes the origin served, the package's size and
/// the names left in `partial/` after the fetch.
async fn fetch_after(
    name: &str,
    prepare: impl FnOnce(&std::path::Path, &Digest, &[u8]),
) -> (u64, u64, Vec<std::ffi::OsString>) {
    let a = sharing_origin().await;
    let bytes = package(name, "1.0.0", "any", &noise(4 * 1024 * 1024, 3));
    a.push(&a.admin.clone(), name, &bytes)
        .await
        .expect(StatusCode::CREATED);
    let b = mem_node(|c| c.p2p.bootstrap = vec![]).await;
    let digest = Digest::of(&bytes);
    let dir = b.node.state().store.blobs().partial_dir();
    std::fs::create_dir_all(&dir).unwrap();
    prepare(&dir, &digest, &bytes);

    let a_peer = a.node.state().p2p.as_ref().unwrap().peer_id;
    connect(&b.node, &a.node).await;
    let state = b.node.state().clone();
    state
        .fetcher
        .fetch(&state, name, digest, bytes.len() as u64, vec![a_peer])
        .await
        .unwrap();
    assert!(state.store.blobs().contains(&digest));
    let left = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    (served(&a.node), bytes.len() as u64, left)
}

/// Leaves in `partial/` (`dir`) a fetch of `bytes` that stopped after the first half: its
/// verified segments on disk and listed. Returns how many segments that is.
fn half_fetched(dir: &std::path::Path, digest: &Digest, bytes: &[u8]) -> u64 {
    let segment = niso_node::blobs::segment_bytes(bytes.len() as u64);
    let half = bytes.len() as u64 / segment / 2;
    let mut partial = bytes.to_vec();
    for b in &mut partial[(half * segment) as usize..] {
        *b = 0;
    }
    let data = dir.join(digest.hex());
    std::fs::write(&data, &partial).unwrap();
    let done: String = (0..half).map(|i| format!("{i}\n")).collect();
    let list = niso_node::blobs::done_file(&data, bytes.len() as u64).unwrap();
    std::fs::write(list, done).unwrap();
    half
}

#[tokio::test]
async fn an_interrupted_fetch_resumes_without_refetching() {
    let mut skipped = 0;
    let (sent, size, left) = fetch_after("resume-pkg", |dir, digest, bytes| {
        let segment = niso_node::blobs::segment_bytes(bytes.len() as u64);
        skipped = half_fetched(dir, digest, bytes) * segment;
    })
    .await;
    assert!(skipped > 0);
    assert!(
        sent <= size - skipped,
        "the first half was fetched again: {sent} bytes served"
    );
    assert!(
        left.is_empty(),
        "a finished fetch leaves its data, segment list and tree behind: {left:?}"
    );
}

#[tokio::test]
async fn a_node_fetching_a_blob_tells_a_peer_it_shares_with_which_segments_it_holds() {
    use niso_node::blobs::{
        FetchState,
        wire::{RangeError, RangeWant, Target, fetch_range},
    };
    let shared = mem_node(|_| {}).await;
    let stranger = mem_node(|_| {}).await;
    let b = mem_node(|c| {
        c.p2p.bootstrap = vec![];
        c.share = vec![ShareRule {
            to: peer_id(&shared.node),
            packages: vec!["*".into()],
        }];
    })
    .await;
    let bytes = package("half-pkg", "1.0.0", "any", &noise(4 * 1024 * 1024, 4));
    let (digest, size) = (Digest::of(&bytes), bytes.len() as u64);
    let dir = b.node.state().store.blobs().partial_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let half = half_fetched(&dir, &digest, &bytes);
    let b_peer = b.node.state().p2p.as_ref().unwrap().peer_id;
    for n in [&shared, &stranger] {
        connect(&n.node, &b.node).await;
    }
    // B resumes the fetch with nobody holding the rest: it runs until it stalls.
    let state = b.node.state().clone();
    let mut progress = state
        .fetcher
        .start(&state, "half-pkg", digest, size, vec![]);
    let resumed =
        progress.wait_for(|s| matches!(s, FetchState::Running { verified } if *verified > 0));
    tokio::time::timeout(CONVERGE, resumed)
        .await
        .unwrap()
        .unwrap();
    let segment = niso_node::blobs::segment_bytes(size);
    let ask = |n: &TestNode| {
        let mut control = n.node.state().p2p.as_ref().unwrap().control();
        let limits = niso_node::blobs::BlobLimits::default();
        async move {
            let want = RangeWant {
                digest,
                size,
                // The last segment: B lacks it.
                chunks: ((size - 1) / segment * segment / 1024, size.div_ceil(1024)),
                last_resort: false,
            };
            let nowhere = Target {
                data: "/nonexistent".into(),
                outboard: None,
            };
            fetch_range(
                &mut control,
                b_peer,
                want,
                &nowhere,
                &limits,
                Default::default(),
            )
            .await
        }
    };
    // The stranger asks first: the list the other gets after it shows the fetch was running.
    assert!(
        matches!(ask(&stranger).await, Err(RangeError::Missing(None))),
        "nothing told to a peer the package is not shared with"
    );
    let Err(RangeError::Missing(Some(list))) = ask(&shared).await else {
        panic!("a miss with a have-list");
    };
    assert_eq!(
        list.held().collect::<Vec<_>>(),
        (0..half).collect::<Vec<_>>()
    );
}

/// A fetch gives its turn back once its bytes are verified and it has a place to store them:
/// checking and storing the blob (the archive check, an fsync of the file and one of its
/// directory) do not hold up the next transfers. Every fetch here stops before its check,
/// so with the turns held through it the last package would never get a byte.
#[tokio::test]
async fn a_fetch_gives_its_turn_back_before_the_blob_is_checked_and_stored() {
    use niso_node::blobs::{BlobLimits, FetchState};

    let a = sharing_origin().await;
    let a_peer = a.node.state().p2p.as_ref().unwrap().peer_id;
    let mut blobs = Vec::new();
    for i in 0..=BlobLimits::default().fetches {
        let name = format!("turn-pkg-{i}");
        let bytes = package(&name, "1.0.0", "any", name.as_bytes());
        a.push(&a.admin.clone(), &name, &bytes)
            .await
            .expect(StatusCode::CREATED);
        blobs.push((name, Digest::of(&bytes), bytes.len() as u64));
    }
    let b = mem_node(|c| {
        c.p2p.bootstrap = vec![];
        c.failpoints = vec!["fetch-finish".into()];
    })
    .await;
    connect(&b.node, &a.node).await;
    let state = b.node.state().clone();
    for (name, digest, size) in &blobs {
        let mut progress = state
            .fetcher
            .start(&state, name, *digest, *size, vec![a_peer]);
        let all_here = progress
            .wait_for(|s| matches!(s, FetchState::Running { verified } if verified == size));
        tokio::time::timeout(CONVERGE, all_here)
            .await
            .unwrap_or_else(|_| panic!("{name}: every byte verified while the others wait"))
            .expect("the fetch goes on");
    }
    let mut stopped = state.failpoints.reached("fetch-finish").unwrap();
    let all_stopped = stopped.wait_for(|n| *n == blobs.len() as u64);
    tokio::time::timeout(CONVERGE, all_stopped)
        .await
        .expect("every fetch reaches its check")
        .unwrap();
    assert_eq!(
        state.fetcher.storing(),
        blobs.len(),
        "each fetch holds a place to check and store while it does"
    );
    for (name, digest, _) in &blobs {
        assert!(
            !state.store.blobs().contains(digest),
            "{name} waits at the failpoint, before its check"
        );
    }
}

#[tokio::test]
async fn a_segment_list_of_another_segment_size_is_not_read() {
    let (sent, size, left) = fetch_after("relisted-pkg", |dir, digest, bytes| {
        // A list under the name earlier releases used (`.done`, whose segments were up to
        // 8 MiB) claims every segment of a file that holds nothing yet: read as this
        // release's, the node would skip the fetch and serve zeros as verified.
        let data = dir.join(digest.hex());
        std::fs::write(&data, vec![0u8; bytes.len()]).unwrap();
        let all: String = (0..64).map(|i| format!("{i}\n")).collect();
        std::fs::write(data.with_extension("done"), all).unwrap();
    })
    .await;
    assert!(sent >= size, "only {sent} of {size} bytes were fetched");
    assert!(left.is_empty(), "the old list is left behind: {left:?}");
}

#[tokio::test]
async fn abandoned_partial_files_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("data/partial");
    std::fs::create_dir_all(&partial).unwrap();
    let files = |digest: Digest| {
        let data = partial.join(digest.hex());
        [
            data.with_extension("done-1024k"),
            data.with_extension("obao"),
            data,
        ]
    };
    // A fetch given up on long ago, and a file that is no fetch's at all.
    let abandoned = files(Digest::of(b"a blob nobody wants any more"));
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
    for f in &abandoned {
        std::fs::write(f, b"left behind").unwrap();
        let file = std::fs::File::options().write(true).open(f).unwrap();
        file.set_modified(long_ago).unwrap();
    }
    let stray = partial.join("stray.tmp");
    std::fs::write(&stray, b"left behind").unwrap();
    // An eager fetch cut short by a restart: no version names it yet, and it resumes.
    let resumable = files(Digest::of(b"an eager fetch in progress"));
    for f in &resumable {
        std::fs::write(f, b"verified so far").unwrap();
    }
    // Beside it, its list as an earlier release named it (and sized its segments).
    let legacy = resumable[2].with_extension("done");
    std::fs::write(&legacy, b"0\n").unwrap();
    let node = TestNode::in_dir(
        dir,
        |c| c.p2p.enabled = Some(false),
        TransportChoice::Memory,
    )
    .await;
    for f in abandoned.iter().chain([&stray, &legacy]) {
        assert!(!f.exists(), "{} was kept", f.display());
    }
    for f in &resumable {
        assert!(f.exists(), "{} was removed", f.display());
    }
    node.get("/healthz", None).await.expect(StatusCode::OK);
}
