//! A catalog of small generated packages and the client that publishes it: shared by the
//! catalog benchmark and the end-to-end catch-up test, so both measure and check the same
//! archives. Version `i` is a pure function of `i`, so a test can rebuild the exact bytes it
//! published and compare them with what a replica serves.

use std::sync::atomic::{AtomicUsize, Ordering};

use niso_protocol::{Digest, pack::Packer};

use crate::http1::Connection;

/// Versions per package: version `i` belongs to package `i / VERSIONS_PER_PACKAGE`.
pub const VERSIONS_PER_PACKAGE: usize = 5;

/// The `i`-th version of the catalog: package name, version, archive bytes.
pub fn archive(i: usize) -> (String, String, Vec<u8>) {
    let name = format!("pkg-{:06}", i / VERSIONS_PER_PACKAGE);
    let version = format!("1.0.{}", i % VERSIONS_PER_PACKAGE);
    let meta = format!(
        "name = \"{name}\"\nversion = \"{version}\"\narch = \"any\"\ndescription = \"catalog package {i}\"\n"
    );
    let data = format!("contents of {name} {version}\n");
    let mut packer = Packer::new(Vec::new(), meta.as_bytes()).unwrap();
    packer
        .add_file("data.txt", false, data.len() as u64, data.as_bytes())
        .unwrap();
    (name, version, packer.finish().unwrap())
}

/// Publishes versions `from..to` over `clients` kept-alive connections (resumable uploads:
/// open, one append, finish); panics on any refusal.
pub fn publish(url: &str, key: &str, from: usize, to: usize, clients: usize) {
    let next = AtomicUsize::new(from);
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                let mut http = Connection::open(url, Some(key));
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= to {
                        break;
                    }
                    let (name, _, bytes) = archive(i);
                    let digest = Digest::of(&bytes).to_string();
                    let opened = http.request(
                        "POST",
                        &format!("/v1/packages/{name}/uploads?digest={digest}"),
                        &[],
                        &[],
                    );
                    assert_eq!(
                        opened.status,
                        201,
                        "{}",
                        String::from_utf8_lossy(&opened.body)
                    );
                    let id = opened.json()["id"].as_str().unwrap().to_owned();
                    let sent = http.request(
                        "PATCH",
                        &format!("/v1/uploads/{id}"),
                        &[
                            ("Upload-Offset", "0"),
                            ("Content-Type", "application/octet-stream"),
                        ],
                        &bytes,
                    );
                    assert!(sent.status < 300, "{}", String::from_utf8_lossy(&sent.body));
                    let done = http.request(
                        "PUT",
                        &format!("/v1/uploads/{id}?digest={digest}"),
                        &[],
                        &[],
                    );
                    assert_eq!(done.status, 201, "{}", String::from_utf8_lossy(&done.body));
                }
            });
        }
    });
}
