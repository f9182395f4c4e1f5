//! The HTTP accept loop: connection limits (overall and per client address), the
//! header-read and body-idle deadlines, and graceful shutdown.
//!
//! The rules, all from `[http]` in the config:
//! - A connection with no request in flight is closed after `header_read_timeout_secs`, and
//!   a request head must arrive whole within that time. That covers connections that never
//!   send a byte, half-sent headers and idle keep-alive connections alike, so a client that
//!   stops talking gives its slot back.
//! - A request body that delivers no bytes for `body_idle_timeout_secs` ends with an error.
//!   Handlers see it as a broken body: an upload keeps the bytes before it and is free to be
//!   resumed at once. Likewise a client that takes no response bytes for that long loses
//!   the connection.
//! - At most `max_connections` connections are held, and at most `max_connections_per_ip`
//!   from one address. A connection over either limit is closed as soon as it is accepted, so
//!   it costs a file descriptor for microseconds, not for the life of the connection. One
//!   client flooding the node leaves the rest of the slots to everyone else, health checks
//!   included.

use std::{
    collections::HashMap,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, time::Sleep};
use tower::ServiceExt;
use tracing::Instrument;

use crate::node::NodeState;

/// How long shutdown waits for requests in flight before cutting their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Pause after an accept error that is not about one connection (out of file descriptors):
/// retrying at once would spin while nothing can change.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` under the `[http]` rules until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    state: Arc<NodeState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = &state.config.http;
    let metrics = &state.metrics;
    let body_idle = Duration::from_secs(config.body_idle_timeout_secs.max(1));
    let header_timeout = Duration::from_secs(config.header_read_timeout_secs.max(1));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(header_timeout))
        .keep_alive_timeout(header_timeout);
    let slots = Slots::new(config.max_connections, config.max_connections_per_ip);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_per_connection(&error) => continue,
                Err(error) => {
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = slots.take(peer.ip()) else {
            metrics.http_connections_refused.inc();
            tracing::debug!(%peer, "connection over the limit closed");
            drop(stream);
            continue;
        };
        tune(&stream);
        let router = router.clone();
        let activity = Activity::default();
        let tracked = activity.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(ConnectInfo(peer));
            let request =
                hyper::Request::from_parts(parts, Body::new(IdleBody::new(body, body_idle)));
            let busy = tracked.begin();
            let response = router.clone().oneshot(request);
            async move {
                let response = response.await?;
                // The request counts as in flight until its response body is gone.
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    Body::new(Tracked {
                        inner: body,
                        _busy: busy,
                    })
                }))
            }
        });
        let io = TokioIo::new(WriteDeadline::new(stream, body_idle));
        let connection = builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let connection = graceful.watch(connection);
        let gauge = metrics.http_connections.clone();
        gauge.inc();
        tokio::spawn(
            async move {
                tokio::select! {
                    result = connection => if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    },
                    () = activity.idle_for(header_timeout) => {
                        tracing::debug!("idle connection closed");
                    }
                }
                gauge.dec();
                drop(slot);
            }
            .instrument(tracing::debug_span!("connection", %peer)),
        );
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight at shutdown were cut");
    }
    Ok(())
}

/// Socket options for an accepted connection. hyper writes a streamed response's head and its
/// first body chunk separately; with Nagle on, the chunk waits for the client's delayed ACK of
/// the head (40 ms on Linux), which made every small blob download 40 ms slower.
fn tune(stream: &tokio::net::TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "could not disable Nagle on a connection");
    }
}

/// Errors that concern only the connection being accepted (it was reset before we got to
/// it): the next accept is unaffected.
fn is_per_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Connection counts, overall and per client address, under one lock.
#[derive(Clone)]
struct Slots(Arc<Mutex<SlotCounts>>);

struct SlotCounts {
    max: usize,
    max_per_ip: usize,
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Slots {
    fn new(max: usize, max_per_ip: usize) -> Self {
        Self(Arc::new(Mutex::new(SlotCounts {
            max,
            max_per_ip,
            total: 0,
            per_ip: HashMap::new(),
        })))
    }

    /// A slot for a connection from `ip`, or `None` when either limit is reached.
    fn take(&self, ip: IpAddr) -> Option<Slot> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if counts.total >= counts.max || from_ip >= counts.max_per_ip {
            return None;
        }
        counts.total += 1;
        counts.per_ip.insert(ip, from_ip + 1);
        Some(Slot {
            slots: self.clone(),
            ip,
        })
    }
}

/// One held connection; dropping it frees the slot.
struct Slot {
    slots: Slots,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.slots.0.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Whether a connection has a request in flight, and since when it has had none. hyper's
/// own header deadline starts only once it reads a request head, which on a new connection
/// comes after the protocol sniffing; this covers a connection from its first moment, over
/// HTTP/1 and HTTP/2 alike.
#[derive(Clone)]
struct Activity(Arc<Mutex<ActivityState>>);

struct ActivityState {
    in_flight: usize,
    idle_since: tokio::time::Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(ActivityState {
            in_flight: 0,
            idle_since: tokio::time::Instant::now(),
        })))
    }
}

impl Activity {
    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn begin(&self) -> Busy {
        self.lock().in_flight += 1;
        Busy(self.clone())
    }

    /// Resolves once the connection has had no request in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let wake = {
                let state = self.lock();
                if state.in_flight > 0 {
                    tokio::time::Instant::now() + limit
                } else if state.idle_since.elapsed() >= limit {
                    return;
                } else {
                    state.idle_since + limit
                }
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// A request in flight; dropping it (with the response body) marks the connection idle.
struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = tokio::time::Instant::now();
        }
    }
}

/// A response body that keeps its request counted as in flight until it is dropped.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket whose writes fail when the client takes no bytes for `idle`: a client that stops
/// reading a response must not hold its connection, and the blob behind it, forever.
struct WriteDeadline {
    inner: tokio::net::TcpStream,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    fn new(inner: tokio::net::TcpStream, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: None,
        }
    }

    /// A write that moved disarms the deadline; a pending one arms it, and fails once it
    /// has passed.
    fn settle<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.timer = None;
            return polled;
        }
        let idle = self.idle;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took no bytes for the idle timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.settle(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.settle(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.settle(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The body failed because the client sent nothing for the body-idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no body bytes for {0:?}")]
pub struct BodyIdle(Duration);

/// A request body that fails when no frame arrives for `idle`. The clock runs only while
/// the handler is waiting on the body, so a handler that is busy elsewhere is never cut off.
struct IdleBody {
    inner: Incoming,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl IdleBody {
    fn new(inner: Incoming, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: None,
        }
    }
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.timer = None;
                        Poll::Ready(Some(Err(Box::new(BodyIdle(idle)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_without_waiting_for_acks() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        assert!(
            !stream.nodelay().expect("read the option"),
            "Nagle is on by default"
        );
        tune(&stream);
        assert!(stream.nodelay().expect("read the option"));
    }

    #[test]
    fn slots_hold_both_limits_and_come_back_on_drop() {
        let slots = Slots::new(3, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = slots.take(a).expect("first from a");
        let _a2 = slots.take(a).expect("second from a");
        assert!(slots.take(a).is_none(), "a is at its per-address limit");
        let b1 = slots.take(b).expect("b has room");
        assert!(slots.take(b).is_none(), "the overall limit is reached");
        drop(a1);
        let _a3 = slots.take(a).expect("a's freed slot is usable again");
        drop(b1);
        let counts = slots.0.lock().expect("lock");
        assert_eq!(counts.total, 2);
        assert_eq!(counts.per_ip.get(&a), Some(&2));
        assert_eq!(counts.per_ip.get(&b), None, "empty entries are removed");
    }
}
