//! Transfers over a bad network, through a proxy that misbehaves on cue: a push through a link
//! that cuts every connection completes by resuming, a push waits out a node restart, and a
//! download that stalls says so, gives up with the documented exit code, and resumes when run
//! again.

use std::process::Stdio;

use niso_tests::{Fault, Proxy, Sandbox, Server, http_get_with_key, random_package};

use crate::uploads::{push_uploads, upload_bytes, wait_until};

const MIB: u64 = 1 << 20;

#[test]
fn a_push_through_a_link_that_cuts_every_connection_completes() {
    let user = Sandbox::new();
    let node = Server::start(&user, &user.path().join("node"), &[], &[]);
    let proxy = Proxy::start(&node.url, Fault::CutEachConnectionAfter(2 * MIB));
    user.ok(&["login", &proxy.url, "--key", &node.admin_key(), "--default"]);
    let file = random_package(&user, "cut", 16, 0x5eed_0b01);
    let size = std::fs::metadata(&file).unwrap().len();

    push_uploads(&user, &file, "Uploaded cut 1.0.0 (any)");
    assert!(
        proxy.cuts() >= 6,
        "a {size}-byte push through a 2 MiB cap is cut at least 6 times, was {}",
        proxy.cuts()
    );
    let received = upload_bytes(&node);
    assert!(
        received < 2 * size,
        "each attempt resumed: the node received {received} bytes for a {size}-byte file"
    );

    // What was published is the file, byte for byte.
    proxy.set_fault(Fault::None);
    user.assert_pulls_back("cut:1.0.0", &file);
}

#[test]
fn a_push_waits_out_a_node_restart() {
    let user = Sandbox::new();
    let data_dir = user.path().join("node");
    let node = Server::start(&user, &data_dir, &[], &[]);
    let key = node.admin_key();
    let proxy = Proxy::start(&node.url, Fault::FreezeEachConnectionAfter(3 * MIB));
    user.ok(&["login", &proxy.url, "--key", &key, "--default"]);
    let file = random_package(&user, "restarted", 16, 0x5eed_0b02);
    let size = std::fs::metadata(&file).unwrap().len();

    let push = user
        .command()
        .arg("push")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The node holds part of the file when it goes down.
    wait_until("the node to hold part of the upload", || {
        let (_, body) = http_get_with_key(&node.url, "/v1/uploads", Some(&key)).unwrap();
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        list["uploads"]
            .as_array()
            .and_then(|l| l.first())
            .is_some_and(|u| u["offset"].as_u64().unwrap() > 0)
    });
    node.kill();
    proxy.set_fault(Fault::None);
    let node = Server::start(&user, &data_dir, &[], &[]);
    proxy.set_upstream(&node.url);

    let out = push.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("is not answering"), "{stderr}");
    assert!(stderr.contains("answers again; resuming at"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Uploaded restarted 1.0.0 (any)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let after_restart = upload_bytes(&node);
    assert!(
        after_restart < size,
        "the restarted node got only the rest: {after_restart} of {size} bytes"
    );
    user.assert_pulls_back("restarted:1.0.0", &file);
}

#[test]
fn a_stalled_download_says_so_gives_up_and_resumes_when_run_again() {
    let user = Sandbox::new();
    let node = Server::start(&user, &user.path().join("node"), &[], &[]);
    let key = node.admin_key();
    user.ok(&["login", &node.url, "--key", &key, "--default"]);
    let file = random_package(&user, "slow", 8, 0x5eed_0b03);
    let size = std::fs::metadata(&file).unwrap().len();
    user.ok(&["push", file.to_str().unwrap()]);

    let proxy = Proxy::start(&node.url, Fault::FreezeDownstreamAfter(2 * MIB));
    let out = user
        .command()
        .env("NISO_KEY", &key)
        .env("NISO_STALL_TIMEOUT_SECS", "2")
        .args(["pull", "slow:1.0.0", "--registry", &proxy.url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("no data from"), "{stderr}");
    assert!(stderr.contains("reconnecting"), "{stderr}");
    assert!(
        stderr.contains("niso: error: the download of slow 1.0.0 stopped at"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "niso: hint: the bytes received are kept: run the same command again to resume"
        ),
        "{stderr}"
    );
    let part = user
        .path()
        .join("data/niso/packages/slow-1.0.0-any.niso.part");
    let kept = std::fs::metadata(&part).unwrap().len();
    assert!(kept > MIB && kept < size, "kept {kept} of {size}");

    proxy.set_fault(Fault::None);
    let before = proxy.downstream_bytes();
    let out = user
        .command()
        .env("NISO_KEY", &key)
        .args(["pull", "slow:1.0.0", "--registry", &proxy.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resent = proxy.downstream_bytes() - before;
    assert!(
        resent < size - kept + MIB,
        "the rerun fetched only the rest: {resent} bytes for {} missing",
        size - kept
    );
    let pulled = user.path().join("data/niso/packages/slow-1.0.0-any.niso");
    assert_eq!(
        std::fs::read(pulled).unwrap(),
        std::fs::read(&file).unwrap()
    );
}
