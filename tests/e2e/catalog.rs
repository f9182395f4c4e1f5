//! Correctness at scale: a fresh peer catches up on a catalog of 10k small versions with
//! eager blobs, and every version it ends up with is the origin's signed record and the exact
//! bytes that were published. (How fast is the catalog benchmark's job; this test bounds the
//! time only generously, so a slow CI machine does not fail it.)

use std::{collections::HashMap, time::Duration};

use niso_protocol::{Digest, record::Record};
use niso_tests::{
    Sandbox,
    catalog::{self, VERSIONS_PER_PACKAGE, archive},
    follow_records,
    http1::Connection,
    replica, sharing_node,
};

const VERSIONS: usize = 10_000;
const CLIENTS: usize = 8;
const CATCH_UP: Duration = Duration::from_secs(600);

#[test]
fn a_fresh_peer_catches_up_on_ten_thousand_versions_and_each_verifies() {
    let user = Sandbox::new();
    let origin = sharing_node(&user, "origin");
    let origin_key = origin.admin_key();
    let info = Connection::open(&origin.url, Some(&origin_key))
        .get("/v1/node")
        .json();
    let origin_addr = info["p2p_addrs"][0].as_str().unwrap().to_owned();
    let origin_id = info["origin"].as_str().unwrap().to_owned();
    catalog::publish(&origin.url, &origin_key, 0, VERSIONS, CLIENTS);

    let replica = replica(&user, "replica", &origin_addr, "eager");
    let key = replica.admin_key();
    // An eager replica applies a manifest only once its blob is here and verified, so its
    // log holding every manifest is the signal that catch-up ended.
    let records = follow_records(&replica.url, &key, CATCH_UP, |seen| seen.len() >= VERSIONS)
        .unwrap_or_else(|seen| {
            panic!(
                "the replica holds {} of {VERSIONS} records after {CATCH_UP:?}",
                seen.len()
            )
        });
    assert_eq!(records.len(), VERSIONS, "records beyond the catalog");

    // Every record: the origin's, its signature valid, naming version `i` with the digest
    // of the archive that was published as `i`, each `i` exactly once.
    let mut found: HashMap<usize, Digest> = HashMap::new();
    for value in records {
        let record: Record = serde_json::from_value(value.clone()).unwrap();
        record.verify().unwrap_or_else(|e| panic!("{e}: {value}"));
        assert_eq!(record.origin.to_string(), origin_id, "{value}");
        let niso_protocol::record::RecordBody::Manifest(m) = &record.body else {
            panic!("only manifests were published: {value}");
        };
        let package: usize = m.name.as_str()["pkg-".len()..].parse().unwrap();
        let i = package * VERSIONS_PER_PACKAGE + m.version.patch as usize;
        let (_, version, bytes) = archive(i);
        assert_eq!(m.version.to_string(), version);
        assert_eq!(m.digest, Digest::of(&bytes), "{value}");
        assert_eq!(m.size, bytes.len() as u64, "{value}");
        assert!(found.insert(i, m.digest).is_none(), "{i} twice");
    }
    assert_eq!(found.len(), VERSIONS);

    // Every blob: the replica serves the very bytes that were published.
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                let mut http = Connection::open(&replica.url, Some(&key));
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= VERSIONS {
                        break;
                    }
                    let (name, version, bytes) = archive(i);
                    let got = http.get(&format!("/v1/packages/{name}/blobs/{}", found[&i]));
                    assert_eq!(got.status, 200, "{name} {version}");
                    assert!(got.body == bytes, "{name} {version}: other bytes");
                }
            });
        }
    });
    let node = Connection::open(&replica.url, Some(&key))
        .get("/v1/node")
        .json();
    assert_eq!(node["versions"], VERSIONS as u64);
    assert_eq!(node["packages"], (VERSIONS / VERSIONS_PER_PACKAGE) as u64);
}
