//! Which kind of tokio runtime the caller runs on: the store's writer and the blob wire move
//! blocking work differently on a current-thread runtime, the only kind whose clock can be
//! paused (a test's, or the simulator's virtual time).

/// Whether the caller runs on a current-thread runtime.
pub(crate) fn on_current_thread() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}
