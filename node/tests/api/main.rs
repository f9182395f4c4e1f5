//! HTTP API tests: the node's router driven in-process, without sockets (and, where the
//! rule under test is the server's or the transport's own, on loopback sockets).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod archives;
mod bundles;
mod connection_room;
mod disk_full;
mod federation;
mod flows;
mod hostile;
mod hostile_peer;
mod http_limits;
mod intake;
mod integrity;
mod metrics;
mod mirror_limits;
mod openapi;
mod p2p_listen;
mod prechecked;
mod records;
mod scopes;
mod stalled_peer;
mod support;
mod sync_flood;
mod sync_streams;
mod ui;
mod uploads;
