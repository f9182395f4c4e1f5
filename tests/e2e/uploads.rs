//! Interrupted pushes: a killed or Ctrl-C'd push resumes its own upload when run again, bytes
//! already published need no upload slot, and `niso registry uploads` lists and cancels per
//! key.

use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use niso_tests::{Sandbox, Server, http_get, random_package};

pub(crate) const WAIT: Duration = Duration::from_secs(60);

pub(crate) fn login(user: &Sandbox, node: &Server) {
    user.ok(&["login", &node.url, "--key", &node.admin_key(), "--default"]);
}

/// `niso registry uploads --json` as `key` (the logged-in key when `None`).
pub(crate) fn uploads(user: &Sandbox, key: Option<&str>) -> Vec<serde_json::Value> {
    let mut cmd = user.command();
    if let Some(k) = key {
        cmd.env("NISO_KEY", k);
    }
    let out = cmd
        .args(["registry", "uploads", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Polls `check` until it holds or `WAIT` passes.
#[track_caller]
pub(crate) fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The node's `niso_upload_bytes_total`: package bytes it has received, over all pushes.
pub(crate) fn upload_bytes(node: &Server) -> u64 {
    let (_, body) = http_get(&node.url, "/metrics").unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("niso_upload_bytes_total "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `niso push FILE` with `failpoint` armed, as `key` (the logged-in key when `None`).
fn push_with_failpoint(user: &Sandbox, file: &Path, failpoint: &str, key: Option<&str>) -> Output {
    let mut cmd = user.command();
    if let Some(k) = key {
        cmd.env("NISO_KEY", k);
    }
    cmd.env("NISO_FAILPOINTS", failpoint)
        .arg("push")
        .arg(file)
        .output()
        .unwrap()
}

/// `niso push FILE`, which must succeed and say `uploaded` (e.g. "Uploaded big 1.0.0");
/// returns its stderr.
#[track_caller]
pub(crate) fn push_uploads(user: &Sandbox, file: &Path, uploaded: &str) -> String {
    let out = user.command().arg("push").arg(file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(uploaded), "{stdout}");
    stderr
}

pub(crate) fn pending_records(user: &Sandbox) -> Vec<PathBuf> {
    match std::fs::read_dir(user.path().join(".local/state/niso/uploads")) {
        Ok(dir) => dir.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_killed_push_resumes_its_own_upload_and_sends_only_the_rest() {
    let user = Sandbox::new();
    let node = Server::start(&user, &user.path().join("node"), &[], &[]);
    login(&user, &node);
    let file = random_package(&user, "big", 4, 0x5eed_0a11);
    let size = std::fs::metadata(&file).unwrap().len();

    let killed = push_with_failpoint(&user, &file, "push-killed-midway", None);
    assert_eq!(
        killed.status.signal(),
        Some(9),
        "the first push dies by SIGKILL: {}",
        String::from_utf8_lossy(&killed.stderr)
    );
    assert_eq!(
        pending_records(&user).len(),
        1,
        "the client remembers its upload"
    );
    // The node counts a PATCH's bytes when the request ends, i.e. once it saw the client go.
    wait_until("the node to take in the killed push's bytes", || {
        upload_bytes(&node) > 0
    });
    let first = upload_bytes(&node);
    let left = uploads(&user, None);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["offset"], first);
    assert!(first < size);

    let stderr = push_uploads(&user, &file, "Uploaded big 1.0.0 (any)");
    assert!(
        stderr.contains("Resuming the upload of big 1.0.0"),
        "{stderr}"
    );
    let second = upload_bytes(&node) - first;
    assert!(second < size, "the rerun sent {second} of {size} bytes");
    assert_eq!(first + second, size, "no byte was sent twice");
    assert!(uploads(&user, None).is_empty());
    assert!(pending_records(&user).is_empty());
    // Pulled back, it is the file that was pushed.
    user.assert_pulls_back("big:1.0.0", &file);
}

#[test]
fn ctrl_c_keeps_the_upload_and_the_next_push_resumes_it() {
    let user = Sandbox::new();
    let node = Server::start(&user, &user.path().join("node"), &[], &[]);
    login(&user, &node);
    let file = random_package(&user, "stuck", 4, 0x5eed_0a12);
    let size = std::fs::metadata(&file).unwrap().len();

    // A push that hangs half-way, its request still open on the node.
    let push = user
        .command()
        .env("NISO_FAILPOINTS", "push-stalled-midway")
        .arg("push")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the push to be under way", || {
        uploads(&user, None)
            .first()
            .is_some_and(|u| u["offset"].as_u64().unwrap() > 0)
    });
    let pid = nix::unistd::Pid::from_raw(i32::try_from(push.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = push.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let left = uploads(&user, None);
    assert_eq!(
        left.len(),
        1,
        "the upload stays for the next push: {left:?}"
    );
    let id = left[0]["id"].as_str().unwrap().to_owned();
    assert!(
        stderr.contains("niso: error: interrupted after")
            && stderr.contains("push the same file again to resume")
            && stderr.contains(&format!("niso registry uploads --cancel {id}")),
        "{stderr}"
    );
    assert_eq!(pending_records(&user).len(), 1, "the client remembers it");
    wait_until("the node to take in the interrupted push's bytes", || {
        upload_bytes(&node) > 0
    });
    let first = upload_bytes(&node);
    assert!(first < size);

    let out = user.command().arg("push").arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Resuming the upload of stuck 1.0.0"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Uploaded stuck 1.0.0"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(upload_bytes(&node), size, "no byte was sent twice");
    assert!(uploads(&user, None).is_empty(), "nothing left on the node");
    assert!(pending_records(&user).is_empty());
}

#[test]
fn a_push_of_published_bytes_needs_no_upload_slot() {
    let user = Sandbox::new();
    let node = user.node("one", "[limits]\nmax_open_uploads_per_key = 1\n");
    let published = random_package(&user, "done", 1, 0x5eed_0a13);
    let other = random_package(&user, "other", 2, 0x5eed_0a14);
    let r = ["--registry", "one"];
    user.ok(&["push", published.to_str().unwrap(), r[0], r[1]]);
    // A killed push holds the key's only slot.
    let mut cmd = user.command();
    cmd.env("NISO_FAILPOINTS", "push-killed-midway")
        .arg("push")
        .arg(&other)
        .args(r);
    assert_eq!(cmd.output().unwrap().status.signal(), Some(9));
    let mut cmd = user.command();
    let held = cmd
        .args(["registry", "uploads", "--json"])
        .args(r)
        .output()
        .unwrap();
    let held: serde_json::Value = serde_json::from_slice(&held.stdout).unwrap();
    assert_eq!(held.as_array().unwrap().len(), 1);

    let again = user.ok(&["push", published.to_str().unwrap(), r[0], r[1]]);
    assert!(
        again.contains("Already published done 1.0.0 (any) with identical contents"),
        "{again}"
    );
    let third = random_package(&user, "third", 1, 0x5eed_0a15);
    let refused = user.fails(&["push", third.to_str().unwrap(), r[0], r[1]], 1);
    assert!(refused.contains("open uploads (limit 1)"), "{refused}");
    assert!(refused.contains("niso registry uploads"), "{refused}");
    drop(node);
}

#[test]
fn registry_uploads_lists_and_cancels_only_what_a_key_may_see() {
    let user = Sandbox::new();
    let node = Server::start(&user, &user.path().join("node"), &[], &[]);
    login(&user, &node);
    let created = user.ok(&[
        "registry",
        "create-key",
        "--scope",
        "push:*",
        "--name",
        "ci",
    ]);
    let ci = created
        .split_whitespace()
        .find(|w| w.starts_with("niso_k1_"))
        .unwrap()
        .to_owned();
    let a = random_package(&user, "admins", 1, 0x5eed_0a16);
    let b = random_package(&user, "cis", 1, 0x5eed_0a17);
    push_with_failpoint(&user, &a, "push-killed-midway", None);
    push_with_failpoint(&user, &b, "push-killed-midway", Some(&ci));
    wait_until("both killed pushes' uploads", || {
        uploads(&user, None).len() == 2
    });
    let all = uploads(&user, None);
    let id_of = |package: &str| {
        all.iter().find(|u| u["package"] == package).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (admins, cis) = (id_of("admins"), id_of("cis"));

    let table = user.ok(&["registry", "uploads"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["ID", "PACKAGE", "OFFSET", "AGE", "IDLE", "KEY"]);
    assert!(table.contains(&admins) && table.contains(&cis), "{table}");
    let ci_row = table.lines().find(|l| l.contains(&cis)).unwrap();
    let ci_key_id = ci_row.split_whitespace().last().unwrap();
    assert!(ci_key_id.starts_with("key_"), "{ci_row}");

    // The ci key sees its own upload only, and cannot cancel the admin's.
    let mine = uploads(&user, Some(&ci));
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["id"], cis.as_str());
    let mut cmd = user.command();
    let out = cmd
        .env("NISO_KEY", &ci)
        .args(["registry", "uploads", "--cancel", &admins])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "not found: {out:?}");
    let mut cmd = user.command();
    let out = cmd
        .env("NISO_KEY", &ci)
        .args(["registry", "uploads", "--cancel", &cis])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("Cancelled upload {cis}")
    );
    assert!(uploads(&user, Some(&ci)).is_empty());

    // The admin key cancels anyone's; a made-up id never reaches the registry.
    user.fails(&["registry", "uploads", "--cancel", "../keys"], 1);
    user.ok(&["registry", "uploads", "--cancel", &admins]);
    assert!(uploads(&user, None).is_empty());
    let help = user.ok(&["registry", "uploads", "--help"]);
    assert!(
        help.contains("--cancel") && help.contains("Example"),
        "{help}"
    );
}

#[test]
fn killed_pushes_stop_locking_the_key_out_once_idle() {
    let user = Sandbox::new();
    // Short enough to wait for, long enough that the lock-out is there to see first.
    let node = user.node(
        "short",
        "[limits]\nmax_open_uploads_per_key = 2\nupload_idle_timeout_secs = 5\n",
    );
    let r = ["--registry", "short"];
    let files: Vec<PathBuf> = (0..3)
        .map(|i| random_package(&user, &format!("app{i}"), 1, 0x5eed_0b00 + i))
        .collect();
    for file in &files[..2] {
        let mut cmd = user.command();
        cmd.env("NISO_FAILPOINTS", "push-killed-midway")
            .arg("push")
            .arg(file)
            .args(r);
        assert_eq!(cmd.output().unwrap().status.signal(), Some(9));
    }
    let refused = user.fails(&["push", files[2].to_str().unwrap(), r[0], r[1]], 1);
    assert!(refused.contains("open uploads (limit 2)"), "{refused}");

    // Nobody cancels anything: the node's sweep frees the slots.
    let listed = || {
        let out = user
            .command()
            .args(["registry", "uploads", "--json"])
            .args(r)
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    wait_until("the abandoned uploads to expire", || {
        listed().as_array().unwrap().is_empty()
    });
    let out = user.ok(&["push", files[2].to_str().unwrap(), r[0], r[1]]);
    assert!(out.contains("Uploaded app2 1.0.0"), "{out}");
    drop(node);
}
