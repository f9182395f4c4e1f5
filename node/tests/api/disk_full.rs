//! A full disk: writes fail with 507 and say why, `/healthz` reports degraded, reads go on,
//! and once space is freed the node writes again by itself, having lost nothing it
//! acknowledged. The data dir sits on a small tmpfs mounted for the test (root only).

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use axum::http::{Method, StatusCode};
use niso_node::p2p::TransportChoice;

use crate::support::{TestNode, package};

/// A tmpfs mounted for the life of the value.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (with the reason printed) where this process may not mount.
    fn mount(size_mib: u32) -> Option<(tempfile::TempDir, Self)> {
        let holder = tempfile::tempdir().unwrap();
        let dir = holder.path().join("fs");
        std::fs::create_dir(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Some((holder, Self(dir))),
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs here (the disk-full test needs root): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount ({e}); the disk-full test needs root");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the filesystem refuses.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = file.write_all(&block) {
            assert_eq!(e.raw_os_error(), Some(28), "filling stopped with {e}");
            break;
        }
    }
    // Whatever is left is smaller than a block: take it byte by byte.
    while file.write_all(&[0u8; 512]).is_ok() {}
    let _ = file.sync_all();
}

fn random_payload(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn healthz(node: &TestNode) -> (StatusCode, String) {
    let reply = node.call(Method::GET, "/healthz", None, None, &[]).await;
    (
        reply.status,
        String::from_utf8_lossy(&reply.body).into_owned(),
    )
}

#[tokio::test]
async fn a_full_disk_is_507_degraded_and_recovers_without_restart() {
    let Some((_holder, fs)) = Tmpfs::mount(48) else {
        return;
    };
    let root = tempfile::TempDir::new_in(&fs.0).unwrap();
    let node = TestNode::in_dir(
        root,
        |c| c.p2p.enabled = Some(false),
        TransportChoice::Memory,
    )
    .await;
    let key = node.admin.clone();
    let first = package("kept", "1.0.0", "any", &random_payload(256 * 1024, 1));
    node.push(&key, "kept", &first)
        .await
        .expect(StatusCode::CREATED);

    let filler = fs.0.join("filler");
    fill(&filler);

    // Pushes fail, saying why, however far they got.
    let big = package("later", "1.0.0", "any", &random_payload(2 * 1024 * 1024, 2));
    let refused = node.push(&key, "later", &big).await;
    assert_eq!(
        refused.status,
        StatusCode::INSUFFICIENT_STORAGE,
        "body: {}",
        String::from_utf8_lossy(&refused.body)
    );
    assert_eq!(refused.code(), "insufficient_storage");
    // Small database writes too, until the database itself hits the wall.
    let mut db_refused = None;
    for i in 0..5000 {
        let reply = node
            .send_json(
                Method::POST,
                "/v1/keys",
                Some(&key),
                serde_json::json!({"name": format!("k{i}-{}", "x".repeat(50)), "scopes": ["pull:*"]}),
            )
            .await;
        if reply.status != StatusCode::CREATED {
            db_refused = Some(reply);
            break;
        }
    }
    let db_refused = db_refused.expect("the database ran out of room within 5000 keys");
    assert_eq!(db_refused.status, StatusCode::INSUFFICIENT_STORAGE);

    let (status, body) = healthz(&node).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "degraded: writes are failing: the disk is full\n");

    // Reads go on.
    node.get("/v1/packages/kept", Some(&key))
        .await
        .expect(StatusCode::OK);

    // Space comes back: the node notices by itself, no restart, no client needed.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = healthz(&node).await;
        if status == StatusCode::OK {
            assert_eq!(body, "ok\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} {body} 20 s after space came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.push(&key, "later", &big)
        .await
        .expect(StatusCode::CREATED);

    // Nothing acknowledged was lost across the failed writes and the database's reopening.
    for name in ["kept", "later"] {
        let detail = node
            .get(&format!("/v1/packages/{name}"), Some(&key))
            .await
            .expect(StatusCode::OK)
            .json();
        assert_eq!(
            detail["versions"][0]["version"], "1.0.0",
            "{name}: {detail}"
        );
    }
}
