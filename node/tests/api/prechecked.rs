//! Signatures checked ahead of the intake (a sync page checked while the page before it is
//! written) hold for exactly the bytes they saw: a valid record is vouched for, a forgery
//! refuted with the reason, and a copy with other bytes, or a record this node already holds,
//! is left to the intake.

use niso_node::signatures::Prechecked;
use niso_protocol::{
    Arch, Digest, PackageName,
    record::{ManifestBody, NodeSecret, Record, RecordBody},
};

use axum::http::StatusCode;

use crate::support::{TestNode, package};

fn manifest(i: u64) -> RecordBody {
    let bytes = format!("bytes of {i}");
    RecordBody::Manifest(ManifestBody {
        name: PackageName::new(format!("pre-{i}")).unwrap(),
        version: "1.0.0".parse().unwrap(),
        arch: Arch::any(),
        digest: Digest::of(bytes.as_bytes()),
        size: bytes.len() as u64,
        description: String::new(),
    })
}

#[tokio::test]
async fn a_precheck_holds_only_for_the_bytes_it_saw() {
    let node = TestNode::new().await;
    let state = node.node.state();
    let secret = NodeSecret::from_bytes(&[7; 32]);
    // Enough records that the check is spread over threads, with forgeries among them.
    let mut records: Vec<Record> = (1..=200)
        .map(|seq| Record::sign(&secret, seq, 1, manifest(seq)))
        .collect();
    for i in [3, 77, 150] {
        records[i].signature[0] ^= 0xff;
    }
    let pre = Prechecked::check(state, &records).await;
    for (i, r) in records.iter().enumerate() {
        let verdict = pre
            .verdict(r)
            .unwrap_or_else(|| panic!("record {i} was not checked"));
        if [3, 77, 150].contains(&i) {
            let why = verdict.as_ref().expect_err("a forgery is refuted");
            assert!(why.contains("signature"), "record {i}: {why}");
        } else {
            assert!(verdict.is_ok(), "record {i}: {verdict:?}");
        }
    }

    let good = records[0].clone();
    let mut resigned = good.clone();
    resigned.signature[63] ^= 1;
    assert!(
        pre.verdict(&resigned).is_none(),
        "the same body under other signature bytes"
    );
    let mut edited = good.clone();
    edited.timestamp_ms += 1;
    assert!(
        pre.verdict(&edited).is_none(),
        "other bytes under the checked signature"
    );
    let stranger = Record::sign(&NodeSecret::from_bytes(&[9; 32]), 1, 1, manifest(1));
    assert!(pre.verdict(&stranger).is_none(), "a record it never saw");
    assert!(Prechecked::default().verdict(&good).is_none());
}

#[tokio::test]
async fn a_record_already_held_is_left_to_the_intake() {
    let node = TestNode::new().await;
    let admin = node.admin.clone();
    node.push(&admin, "held", &package("held", "1.0.0", "any", b"held"))
        .await
        .expect(StatusCode::CREATED);
    let page = node
        .get("/v1/records?after=0", Some(&admin))
        .await
        .expect(StatusCode::OK)
        .json();
    let held: Record = serde_json::from_value(page["records"][0].clone()).unwrap();
    held.verify().unwrap();
    let pre = Prechecked::check(node.node.state(), std::slice::from_ref(&held)).await;
    assert!(
        pre.verdict(&held).is_none(),
        "a held record is a duplicate: no signature check is spent on it"
    );
}
