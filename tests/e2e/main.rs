//! End-to-end tests: the real `niso` binary, real sockets, one test binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod airgap;
mod archives;
mod bad_network;
mod catalog;
mod cli;
mod crash;
mod federation;
mod hostile_registry;
mod integrity;
mod lan;
mod lifecycle;
mod man;
mod progress;
mod readme;
mod uploads;
mod walkthrough;
mod web_ui;
