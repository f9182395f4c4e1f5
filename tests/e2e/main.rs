//! End-to-end tests: the real `niso` binary, real sockets, one test binary.

mod crash;
mod walkthrough;
