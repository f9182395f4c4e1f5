//! HTTP API tests: the node's router driven in-process, without sockets.

mod flows;
mod hostile;
mod scopes;
mod support;
