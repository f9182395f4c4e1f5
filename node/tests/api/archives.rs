//! Archives that unpack outside the package or cost the node memory: refused at push with a
//! 400 that says why, and nothing is published.

use std::io::{Read as _, Write as _};

use axum::http::StatusCode;
use niso_protocol::pack::Packer;

use crate::support::TestNode;

const META: &[u8] = b"name = \"evil\"\nversion = \"1.0.0\"\narch = \"any\"\n";

/// A tar stream starting with `niso.toml`, then `links` as raw symlink headers in that order.
fn tar_with_links(links: &[(String, String)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(META.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "niso.toml", META).unwrap();
    for (path, target) in links {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// `d -> .`, `up1 -> d/d/..`, `upN -> d/up(N-1)/..`, `etc-passwd -> up12/etc/passwd`: once
/// unpacked, `etc-passwd` is `/etc/passwd`.
fn chain() -> Vec<(String, String)> {
    let mut links = vec![("d".into(), ".".into()), ("up1".into(), "d/d/..".into())];
    for n in 2..=12 {
        links.push((format!("up{n}"), format!("d/up{}/..", n - 1)));
    }
    links.push(("etc-passwd".into(), "up12/etc/passwd".into()));
    links
}

async fn assert_nothing_published(node: &TestNode) {
    let store = &node.node.state().store;
    assert_eq!(store.counts().unwrap(), (0, 0), "a version became visible");
    assert!(
        store.blobs().list().unwrap().is_empty(),
        "a blob was stored"
    );
    assert!(
        store.uploads().unwrap().is_empty(),
        "a failed upload was kept"
    );
    node.get("/v1/packages/evil", Some(&node.admin))
        .await
        .expect(StatusCode::NOT_FOUND);
}

fn message(reply: &crate::support::Reply) -> String {
    reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_symlink_chain_is_refused_at_push() {
    let node = TestNode::new().await;
    let mut sorted = chain();
    sorted.sort();
    for links in [chain(), sorted] {
        let bytes = zstd::encode_all(&tar_with_links(&links)[..], 3).unwrap();
        let r = node.push(&node.admin, "evil", &bytes).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", message(&r));
        assert_eq!(r.code(), "invalid_archive");
        assert!(
            message(&r).contains("symlink `up1` points outside the package"),
            "{}",
            message(&r)
        );
    }
    assert_nothing_published(&node).await;
}

#[tokio::test]
async fn a_wide_zstd_window_is_refused_at_push() {
    let node = TestNode::new().await;
    let tar = tar_with_links(&[]);
    let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
    encoder.window_log(27).unwrap();
    for chunk in tar.chunks(512) {
        encoder.write_all(chunk).unwrap();
    }
    let bytes = encoder.finish().unwrap();
    let r = node.push(&node.admin, "evil", &bytes).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", message(&r));
    assert_eq!(r.code(), "invalid_archive");
    assert!(message(&r).contains("zstd window is larger than the 8 MiB allowed"));
    assert_nothing_published(&node).await;
}

#[tokio::test]
async fn the_configured_ratio_applies_and_legit_links_pass() {
    let node = TestNode::with(|c| c.limits.max_unpack_ratio = 20).await;
    // 64 MiB of zeros: within the default 200:1 over the 1 MiB floor, not within 20:1.
    let mut p = Packer::new(Vec::new(), META).unwrap();
    p.add_file("zeros", false, 64 << 20, std::io::repeat(0).take(64 << 20))
        .unwrap();
    let bomb = p.finish().unwrap();
    let r = node.push(&node.admin, "evil", &bomb).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", message(&r));
    assert!(
        message(&r).contains("unpacks to more than 20 times its compressed size"),
        "{}",
        message(&r)
    );
    assert_nothing_published(&node).await;

    let mut p = Packer::new(Vec::new(), META).unwrap();
    p.add_dir("bin").unwrap();
    p.add_symlink("bin/tool", "../lib/tool").unwrap();
    p.add_symlink("current", "v1").unwrap();
    p.add_dir("lib").unwrap();
    p.add_file("lib/tool", true, 2, &b"#!"[..]).unwrap();
    p.add_dir("v1").unwrap();
    let good = p.finish().unwrap();
    node.push(&node.admin, "evil", &good)
        .await
        .expect(StatusCode::CREATED);
}
