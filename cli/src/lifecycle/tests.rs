//! The lifecycle transactions on a scratch data dir, with archives packed here: what each
//! step leaves on disk, and that a refused or failed step leaves what was there before.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};

use niso_protocol::{Arch, Digest, PackageName, Version, pack::Packer};

use super::*;
use crate::exit;

const NAME: &str = "tool";

/// A user's data and config dirs in a tempdir, and the lifecycle over them.
struct Machine {
    dir: tempfile::TempDir,
    lifecycle: Lifecycle,
}

impl Machine {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let lifecycle = Self::lifecycle_in(dir.path(), &[]);
        Self { dir, lifecycle }
    }

    fn lifecycle_in(dir: &Path, failpoints: &[&str]) -> Lifecycle {
        let failpoints: Vec<String> = failpoints.iter().map(|f| (*f).to_owned()).collect();
        Lifecycle::new(
            &dir.join("data/niso"),
            &dir.join("config"),
            false,
            Failpoints::new(&failpoints),
        )
    }

    /// The same machine, with failpoints armed.
    fn with_failpoints(&self, failpoints: &[&str]) -> Lifecycle {
        Self::lifecycle_in(self.dir.path(), failpoints)
    }

    fn pkgs(&self) -> PathBuf {
        self.dir.path().join("data/niso/pkgs").join(NAME)
    }

    /// Writes `bytes` as an archive file, as `pull::fetch` leaves one.
    fn archive_file(&self, bytes: &[u8]) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("{}.niso", Digest::of(bytes).hex()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Packs and installs `version` of the tool, whose executable prints `tool VERSION`.
    fn install(&self, version: &str) -> ResolvedPackage {
        let bytes = tool_archive(version, "");
        let resolved = listed(version, &bytes);
        let got = self
            .lifecycle
            .install(&self.archive_file(&bytes), &resolved)
            .unwrap();
        assert_eq!(got, Installation::Installed);
        resolved
    }

    fn activate(&self, version: &str) -> Activation {
        self.lifecycle
            .activate(&name(), &v(version), false)
            .unwrap()
    }

    /// What the executable on PATH is: the bin link read through `current`.
    fn exe(&self) -> String {
        let bin = self.dir.path().join("data/niso/bin").join(NAME);
        String::from_utf8(std::fs::read(bin).unwrap()).unwrap()
    }

    fn current(&self) -> PathBuf {
        std::fs::read_link(self.pkgs().join("current")).unwrap()
    }

    fn state(&self) -> PackageState {
        self.lifecycle.state(&name()).unwrap()
    }

    fn state_text(&self) -> String {
        std::fs::read_to_string(self.pkgs().join("state.toml")).unwrap()
    }
}

fn name() -> PackageName {
    PackageName::new(NAME).unwrap()
}

fn v(version: &str) -> Version {
    Version::parse(version).unwrap()
}

fn script(version: &str) -> String {
    format!("#!/bin/sh\necho {NAME} {version}\n")
}

/// The tool's archive at `version`; `extra_meta` is appended to its `niso.toml`.
fn tool_archive(version: &str, extra_meta: &str) -> Vec<u8> {
    let meta = format!(
        "name = \"{NAME}\"\nversion = \"{version}\"\narch = \"any\"\nbin = [\"bin/{NAME}\"]\n{extra_meta}"
    );
    let mut p = Packer::new(Vec::new(), meta.as_bytes()).unwrap();
    p.add_dir("bin").unwrap();
    let script = script(version);
    p.add_file(
        &format!("bin/{NAME}"),
        true,
        script.len() as u64,
        script.as_bytes(),
    )
    .unwrap();
    p.finish().unwrap()
}

/// What a registry lists for `bytes` as the tool's `version`.
fn listed(version: &str, bytes: &[u8]) -> ResolvedPackage {
    ResolvedPackage {
        name: name(),
        version: v(version),
        arch: Arch::any(),
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
        description: String::new(),
    }
}

fn refusal(err: &anyhow::Error) -> &LifecycleError {
    err.downcast_ref::<LifecycleError>()
        .unwrap_or_else(|| panic!("not a lifecycle refusal: {err:#}"))
}

#[test]
fn install_then_activate_puts_the_executable_on_path() {
    let m = Machine::new();
    m.install("1.0.0");
    let state = m.state();
    assert_eq!(state.active, None, "installing does not activate");
    assert_eq!(
        state.installed.keys().cloned().collect::<Vec<_>>(),
        [v("1.0.0")]
    );
    assert!(m.pkgs().join("1.0.0/niso.toml").is_file());
    assert!(std::fs::symlink_metadata(m.pkgs().join("current")).is_err());

    let activation = m.activate("1.0.0");
    assert_eq!(
        activation,
        Activation {
            replaced: None,
            service: ServiceOutcome::None,
        }
    );
    assert_eq!(m.current(), Path::new("1.0.0"));
    assert_eq!(m.exe(), script("1.0.0"));
    assert_eq!(m.state().active, Some(v("1.0.0")));
}

#[test]
fn reinstalling_the_same_bytes_changes_nothing_and_other_bytes_are_refused() {
    let m = Machine::new();
    let resolved = m.install("1.0.0");
    let before = m.state_text();
    let bytes = tool_archive("1.0.0", "");
    assert!(m.lifecycle.has_build(&resolved).unwrap());
    assert_eq!(
        m.lifecycle
            .install(&m.archive_file(&bytes), &resolved)
            .unwrap(),
        Installation::AlreadyInstalled
    );
    assert_eq!(m.state_text(), before);

    // The same version, other contents: a version never changes its bytes here.
    let other = tool_archive("1.0.0", "description = \"changed\"\n");
    let other_listed = listed("1.0.0", &other);
    let err = m.lifecycle.has_build(&other_listed).unwrap_err();
    assert!(
        matches!(refusal(&err), LifecycleError::OtherBytes { .. }),
        "{err}"
    );
    let err = m
        .lifecycle
        .install(&m.archive_file(&other), &other_listed)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "tool 1.0.0 is already installed from other bytes (any {}); remove it first with `niso remove tool:1.0.0`",
            resolved.digest
        )
    );
    assert_eq!(m.state_text(), before);
    assert!(
        !std::fs::read_to_string(m.pkgs().join("1.0.0/niso.toml"))
            .unwrap()
            .contains("changed")
    );
}

#[test]
fn rollback_returns_to_the_previous_version_and_holds_it_there() {
    let m = Machine::new();
    m.install("1.0.0");
    m.install("2.0.0");
    m.activate("1.0.0");
    assert_eq!(m.activate("2.0.0").replaced, Some(v("1.0.0")));
    assert_eq!(m.exe(), script("2.0.0"));
    m.lifecycle.follow(&name(), "latest", "private").unwrap();

    let rollback = m.lifecycle.rollback(&name()).unwrap();
    assert_eq!(
        rollback,
        Rollback {
            to: v("1.0.0"),
            held_from: Some(v("2.0.0")),
            service: ServiceOutcome::None,
        }
    );
    assert_eq!(m.current(), Path::new("1.0.0"));
    assert_eq!(m.exe(), script("1.0.0"));
    let state = m.state();
    assert_eq!(state.active, Some(v("1.0.0")));
    assert_eq!(state.previous, Some(v("2.0.0")));
    assert_eq!(state.held_from, Some(v("2.0.0")));
    assert_eq!(
        state.track.as_deref(),
        Some("latest"),
        "the hold keeps the track"
    );

    // Upgrading by name switches and ends the hold.
    let switched = m
        .lifecycle
        .switch(&name(), &v("2.0.0"), "2", "private", false)
        .unwrap();
    assert_eq!(switched.replaced, Some(v("1.0.0")));
    assert_eq!(m.exe(), script("2.0.0"));
    let state = m.state();
    assert_eq!(state.held_from, None);
    assert_eq!(state.track.as_deref(), Some("2"));
    assert_eq!(state.registry.as_deref(), Some("private"));
}

#[test]
fn rollback_needs_a_previous_version_still_installed() {
    let m = Machine::new();
    let err = m.lifecycle.rollback(&name()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tool is not installed here (see `niso list`)"
    );

    m.install("1.0.0");
    let err = m.lifecycle.rollback(&name()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tool has no previous version to roll back to: only nothing was ever active here"
    );
    m.activate("1.0.0");
    let err = m.lifecycle.rollback(&name()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tool has no previous version to roll back to: only 1.0.0 was ever active here"
    );

    m.install("2.0.0");
    m.activate("2.0.0");
    m.lifecycle.remove(&name(), Some("1.0.0"), false).unwrap();
    let err = m.lifecycle.rollback(&name()).unwrap_err();
    assert!(
        matches!(refusal(&err), LifecycleError::NoPrevious { .. }),
        "removing the previous version forgets it: {err}"
    );
    assert_eq!(m.exe(), script("2.0.0"));
}

#[test]
fn a_failed_install_leaves_the_active_version_active_and_no_staging_dir() {
    let m = Machine::new();
    m.install("1.0.0");
    m.activate("1.0.0");
    let before = m.state_text();
    let unchanged = |m: &Machine, what: &str| {
        assert_eq!(m.state_text(), before, "{what}");
        assert_eq!(m.current(), Path::new("1.0.0"), "{what}");
        assert_eq!(m.exe(), script("1.0.0"), "{what}");
        let left: Vec<_> = std::fs::read_dir(m.pkgs())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "1.0.0" && n != "current" && n != "state.toml")
            .collect();
        assert!(left.is_empty(), "{what} left {left:?}");
    };

    // Corrupt bytes, whose digest the caller checked (a registry can list any bytes).
    let mut corrupt = tool_archive("2.0.0", "");
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    let err = m
        .lifecycle
        .install(&m.archive_file(&corrupt), &listed("2.0.0", &corrupt))
        .unwrap_err();
    assert_eq!(exit::code(&err), exit::VERIFICATION, "{err:#}");
    assert!(
        format!("{err:#}").contains("failed the package checks"),
        "{err:#}"
    );
    unchanged(&m, "a corrupt archive");

    // Sound bytes of another version than the one listed.
    let other = tool_archive("3.0.0", "");
    let err = m
        .lifecycle
        .install(&m.archive_file(&other), &listed("2.0.0", &other))
        .unwrap_err();
    assert_eq!(exit::code(&err), exit::VERIFICATION, "{err:#}");
    assert!(
        format!("{err:#}").starts_with(
            "could not install tool 2.0.0: the package the registry sent says it is tool 3.0.0"
        ),
        "{err:#}"
    );
    unchanged(&m, "a mismatching archive");

    // The disk failing halfway through unpacking, after the staging dir was made.
    let good = tool_archive("2.0.0", "");
    let err = m
        .with_failpoints(&["install-write"])
        .install(&m.archive_file(&good), &listed("2.0.0", &good))
        .unwrap_err();
    assert!(format!("{err:#}").contains("injected failure"), "{err:#}");
    assert_eq!(exit::code(&err), exit::FAILURE);
    unchanged(&m, "a failed write");

    // Once the fault is gone the same install works.
    m.install("2.0.0");
    assert_eq!(m.exe(), script("1.0.0"), "installing does not activate");
}

#[test]
fn remove_refuses_the_active_version_unless_forced() {
    let m = Machine::new();
    m.install("1.0.0");
    m.install("2.0.0");
    m.activate("1.0.0");
    m.activate("2.0.0");

    let err = m
        .lifecycle
        .remove(&name(), Some("2.0.0"), false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tool 2.0.0 is active; deactivate it first (`niso deactivate tool`) or pass --force"
    );
    let err = m.lifecycle.remove(&name(), None, false).unwrap_err();
    assert!(
        matches!(refusal(&err), LifecycleError::Active { .. }),
        "{err}"
    );
    assert!(m.pkgs().join("2.0.0").is_dir());
    assert_eq!(m.exe(), script("2.0.0"));
    let err = m
        .lifecycle
        .remove(&name(), Some("9.9.9"), false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tool 9.9.9 is not installed; installed: 1.0.0, 2.0.0"
    );

    let removal = m.lifecycle.remove(&name(), Some("1.0.0"), false).unwrap();
    assert_eq!(
        removal,
        Removal {
            deactivated: None,
            removed: vec![v("1.0.0")],
        }
    );
    assert!(!m.pkgs().join("1.0.0").exists());
    assert_eq!(m.state().previous, None);

    let removal = m.lifecycle.remove(&name(), None, true).unwrap();
    assert_eq!(
        removal,
        Removal {
            deactivated: Some(Deactivation {
                version: v("2.0.0"),
                stopped_unit: None,
            }),
            removed: vec![v("2.0.0")],
        }
    );
    assert!(!m.pkgs().exists(), "the last version takes the package dir");
    assert!(std::fs::symlink_metadata(m.dir.path().join("data/niso/bin").join(NAME)).is_err());
    assert!(m.lifecycle.list().unwrap().is_empty());
    let err = m.lifecycle.remove(&name(), None, true).unwrap_err();
    assert_eq!(err.to_string(), "tool is not installed");
}

#[test]
fn deactivate_unlinks_and_keeps_the_version_to_roll_back_to() {
    let m = Machine::new();
    m.install("1.0.0");
    m.activate("1.0.0");
    let done = m.lifecycle.deactivate(&name()).unwrap();
    assert_eq!(done.version, v("1.0.0"));
    assert!(std::fs::symlink_metadata(m.pkgs().join("current")).is_err());
    assert!(std::fs::symlink_metadata(m.dir.path().join("data/niso/bin").join(NAME)).is_err());
    assert!(m.pkgs().join("1.0.0").is_dir());
    let err = m.lifecycle.deactivate(&name()).unwrap_err();
    assert_eq!(err.to_string(), "tool is not active");

    let back = m.lifecycle.rollback(&name()).unwrap();
    assert_eq!(back.to, v("1.0.0"));
    assert_eq!(
        back.held_from, None,
        "nothing was active, so nothing to hold from"
    );
    assert_eq!(m.exe(), script("1.0.0"));
}

#[test]
fn activation_checks_everything_before_it_swaps() {
    let m = Machine::new();
    m.install("1.0.0");
    let err = m
        .lifecycle
        .activate(&name(), &v("9.9.9"), false)
        .unwrap_err();
    assert_eq!(err.to_string(), "tool 9.9.9 is not installed");

    // Another package's executable of the same name stays where it is.
    let bin = m.dir.path().join("data/niso/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let theirs = Path::new("../pkgs/other/current/bin/tool");
    std::os::unix::fs::symlink(theirs, bin.join(NAME)).unwrap();
    let err = m
        .lifecycle
        .activate(&name(), &v("1.0.0"), false)
        .unwrap_err();
    assert!(
        matches!(refusal(&err), LifecycleError::LinkTaken { .. }),
        "{err}"
    );
    assert_eq!(std::fs::read_link(bin.join(NAME)).unwrap(), theirs);
    assert!(std::fs::symlink_metadata(m.pkgs().join("current")).is_err());
    assert_eq!(m.state().active, None);
}

#[test]
fn a_declared_service_runs_in_the_foreground_without_systemd() {
    let m = Machine::new();
    let err = m.lifecycle.active_service(&name()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tool is not active; activate it with `niso activate tool`"
    );
    m.install("1.0.0");
    m.activate("1.0.0");
    let err = m.lifecycle.active_service(&name()).unwrap_err();
    assert_eq!(err.to_string(), "tool 1.0.0 declares no [service]");

    let bytes = tool_archive("2.0.0", "[service]\ncommand = \"bin/tool\"\n");
    let resolved = listed("2.0.0", &bytes);
    m.lifecycle
        .install(&m.archive_file(&bytes), &resolved)
        .unwrap();
    let activation = m.activate("2.0.0");
    assert_eq!(activation.service, ServiceOutcome::NoSystemd);
    let (spec, root) = m.lifecycle.active_service(&name()).unwrap();
    assert_eq!(spec.command, "bin/tool");
    assert_eq!(root, m.pkgs().join("current"));
}
