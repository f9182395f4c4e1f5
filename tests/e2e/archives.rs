//! Hostile archives end to end: `niso pack` refuses a tree whose symlinks climb out of it, the
//! client refuses to install such an archive from a registry that serves it anyway, and a
//! node checking archives with huge zstd windows keeps its memory flat.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    sync::{Arc, Barrier},
};

use niso_protocol::Digest;
use niso_tests::{FakeRegistry, Sandbox, Server};

const META: &str = "name = \"evil\"\nversion = \"1.0.0\"\narch = \"any\"\n";

/// `d -> .`, `up1 -> d/d/..`, `upN -> d/up(N-1)/..`, `etc-passwd -> up12/etc/passwd`: once
/// unpacked fewer than 12 levels deep, `etc-passwd` is `/etc/passwd`.
fn chain() -> Vec<(String, String)> {
    let mut links = vec![("d".into(), ".".into()), ("up1".into(), "d/d/..".into())];
    for n in 2..=12 {
        links.push((format!("up{n}"), format!("d/up{}/..", n - 1)));
    }
    links.push(("etc-passwd".into(), "up12/etc/passwd".into()));
    links
}

/// The chain as a `.niso`, written with raw tar headers as a hostile publisher would.
fn chain_archive() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(META.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "niso.toml", META.as_bytes()).unwrap();
    for (path, target) in chain() {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }
    zstd::encode_all(&b.into_inner().unwrap()[..], 3).unwrap()
}

/// Every symlink under `root`, not following any.
fn symlinks_under(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_symlink() {
                out.push(path);
            } else if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

#[test]
fn pack_refuses_a_tree_whose_links_climb_out() {
    let user = Sandbox::new();
    let src = user.path().join("src/evil");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("niso.toml"), META).unwrap();
    for (path, target) in chain() {
        std::os::unix::fs::symlink(target, src.join(path)).unwrap();
    }
    let out_file = user.path().join("evil.niso");
    let out = user.run(&[
        "pack",
        src.to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pack succeeded: {stderr}");
    assert!(
        stderr.contains("symlink `up1` points outside the package (to `d/d/..`)"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(user.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("niso"))
        .collect();
    assert!(
        !out_file.exists() && left.is_empty(),
        "left behind: {left:?}"
    );
}

/// A registry that resolves `evil` to `blob` and serves it, whatever it is asked.
fn fake_registry(blob: Vec<u8>) -> FakeRegistry {
    let answer = serde_json::json!({
        "name": "evil", "version": "1.0.0", "arch": "any",
        "digest": Digest::of(&blob).to_string(), "size": blob.len(),
        "description": "", "matched": "exact",
    });
    FakeRegistry::answering(answer, blob)
}

#[test]
fn install_refuses_the_chain_from_a_registry_that_serves_it() {
    let user = Sandbox::new();
    let registry = fake_registry(chain_archive());
    let out = user.run(&["install", "evil:1.0.0", "--registry", &registry.url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "install succeeded: {stderr}");
    assert!(
        registry.asked_for_a_blob(),
        "the archive was never downloaded: {stderr}"
    );
    assert!(
        stderr.contains("symlink `up1` points outside the package"),
        "{stderr}"
    );
    let root = user.path().canonicalize().unwrap();
    for link in symlinks_under(&root) {
        assert!(
            !link.ends_with("etc-passwd"),
            "{} was created",
            link.display()
        );
        if let Ok(real) = link.canonicalize() {
            assert!(
                real.starts_with(&root),
                "{} leads outside, to {}",
                link.display(),
                real.display()
            );
        }
    }
    assert!(
        !root.join("data/niso/pkgs/evil/1.0.0").exists(),
        "the version was unpacked"
    );
}

/// One HTTP/1.1 request on a fresh connection: the status code and the body.
fn http(
    url: &str,
    method: &str,
    path: &str,
    key: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// `niso.toml` and 160 MiB of zeros, compressed with a 128 MiB window and long-distance
/// matching: a few kilobytes that, decoded with zstd's default limits, fill the whole window.
fn wide_window_archive(name: &str) -> Vec<u8> {
    let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
    encoder.window_log(27).unwrap();
    encoder.long_distance_matching(true).unwrap();
    let mut b = tar::Builder::new(encoder);
    let meta = format!("name = \"{name}\"\nversion = \"1.0.0\"\narch = \"any\"\n");
    let mut h = tar::Header::new_gnu();
    h.set_size(meta.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "niso.toml", meta.as_bytes()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(160 << 20);
    h.set_mode(0o644);
    b.append_data(&mut h, "zeros", std::io::repeat(0).take(160 << 20))
        .unwrap();
    b.into_inner().unwrap().finish().unwrap()
}

#[test]
fn wide_windows_cost_the_node_no_memory() {
    let user = Sandbox::new();
    let node = Server::start(&user, &user.path().join("node"), &["--no-p2p"], &[]);
    let key = node.admin_key();
    let pid = node.child.id();
    let archives: Vec<Vec<u8>> = (0..6)
        .map(|i| wide_window_archive(&format!("wide{i}")))
        .collect();
    assert!(archives.iter().all(|a| a.len() < 64 * 1024));
    let before = niso_tests::peak_rss_kib(pid);

    let barrier = Arc::new(Barrier::new(archives.len()));
    let pushes: Vec<_> = archives
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| {
            let (url, key, barrier) = (node.url.clone(), key.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let name = format!("wide{i}");
                let (status, body) = http(
                    &url,
                    "POST",
                    &format!("/v1/packages/{name}/uploads"),
                    &key,
                    "",
                    b"",
                );
                assert_eq!(status, 201, "{body}");
                let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let (status, body) = http(
                    &url,
                    "PATCH",
                    &format!("/v1/uploads/{id}"),
                    &key,
                    "Upload-Offset: 0\r\n",
                    &bytes,
                );
                assert_eq!(status, 200, "{body}");
                // Every upload is in before any is checked, so the checks overlap.
                barrier.wait();
                let digest = Digest::of(&bytes);
                http(
                    &url,
                    "PUT",
                    &format!("/v1/uploads/{id}?digest={digest}"),
                    &key,
                    "",
                    b"",
                )
            })
        })
        .collect();
    for push in pushes {
        let (status, body) = push.join().unwrap();
        assert_eq!(status, 400, "{body}");
        assert!(
            body.contains("zstd window is larger than the 8 MiB allowed"),
            "{body}"
        );
    }
    let after = niso_tests::peak_rss_kib(pid);
    eprintln!("node VmHWM: {before} KiB before the pushes, {after} KiB after");
    assert!(after < 150 * 1024, "node peaked at {after} KiB");
}
