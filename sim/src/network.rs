//! The simulated network: an in-process libp2p transport whose links have latency, jitter,
//! per-node uplink bandwidth, loss, clogs and partitions, all decided by one seeded RNG.
//!
//! Connections are pairs of in-memory pipes. A write is stamped with the time it may be read
//! (when its last byte has left the sender's uplink, plus link latency and jitter, plus a
//! retransmission delay for a "lost" segment: streams are reliable, so loss costs time, as it
//! does on TCP) and queued; the reader sees bytes only from then on. Each node's uplink sends
//! one byte after another at its rate, shared by all its connections, behind a small send
//! buffer.
//! A partition resets every connection across the cut and refuses dials across it until healed.
//! A silenced node stops as a stopped process (SIGSTOP) does, for the rest of the run: from
//! then on nothing it writes arrives anywhere and it reads nothing (not even bytes already on
//! their way to it), yet its connections stay open, with no reset and no close, and dials to
//! it connect but carry nothing. Bytes it wrote before go on arriving.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use futures::{AsyncRead, AsyncWrite, channel::mpsc, future::Ready};
use libp2p::{
    Multiaddr,
    core::{
        multiaddr::Protocol,
        transport::{DialOpts, ListenerId, Transport, TransportError, TransportEvent},
    },
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::{Instant, Sleep};

/// Properties of the link between two nodes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkSpec {
    pub latency: Duration,
    pub jitter: Duration,
    /// Probability that a segment is lost and must be retransmitted.
    pub loss: f64,
}

impl Default for LinkSpec {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss: 0.0,
        }
    }
}

/// How far off the bytes to or from a silenced node arrive: past the end of any run.
const SILENCE: Duration = Duration::from_secs(365 * 24 * 3600);
/// Delay a lost segment costs (a TCP retransmission timeout).
const RETRANSMIT: Duration = Duration::from_millis(200);
/// Largest write accepted at once, so connections sharing an uplink interleave finely.
const MAX_WRITE: usize = 16 * 1024;
/// How much a node may have queued on its uplink beyond what is on the wire, as time at the
/// link's rate: a socket send buffer. Above a timer tick, so the link never idles while a
/// writer waits; small, so connections sharing the uplink take turns.
const SEND_BUFFER: Duration = Duration::from_millis(4);

/// Fewest entries of the connection list before its dead ones are swept.
const MIN_SWEEP: usize = 64;

/// A node's uplink: bytes leave one after another at the link's rate.
struct Uplink {
    /// Bytes per second; `None` = unlimited.
    rate: Option<f64>,
    /// When everything queued so far has left the node.
    free_at: Instant,
}

impl Uplink {
    fn new(rate_bytes: Option<f64>) -> Self {
        Self {
            rate: rate_bytes,
            free_at: Instant::now(),
        }
    }

    /// Queues `n` bytes: when the last of them has left, or how long until there is room.
    ///
    /// A writer either sends a whole chunk or waits: granting whatever trickled in since the
    /// last call would have writers spin on a few bytes at a time.
    fn queue(&mut self, n: usize) -> Result<Instant, Duration> {
        let now = Instant::now();
        let Some(rate) = self.rate else {
            return Ok(now);
        };
        let start = self.free_at.max(now);
        let backlog = start - now;
        if backlog > SEND_BUFFER {
            return Err(backlog - SEND_BUFFER);
        }
        self.free_at = start + Duration::from_secs_f64(n as f64 / rate);
        Ok(self.free_at)
    }
}

struct NodeNet {
    uplink: Uplink,
    sent: u64,
    listener: Option<mpsc::UnboundedSender<(usize, Conn)>>,
}

/// A connection's endpoints and its two pipes, for breaking it on a partition or crash.
type LiveConn = (usize, usize, Weak<Mutex<Pipe>>, Weak<Mutex<Pipe>>);

struct State {
    nodes: Vec<NodeNet>,
    default_link: LinkSpec,
    links: HashMap<(usize, usize), LinkSpec>,
    /// Group of each node while partitioned.
    partition: Option<Vec<usize>>,
    /// Clogged links (either direction) and until when.
    clogs: HashMap<(usize, usize), Instant>,
    rng: ChaCha8Rng,
    conns: Vec<LiveConn>,
    /// Length of `conns` at which its dead entries are dropped next: twice the live ones
    /// after the last sweep, so each connection costs a constant share of the sweeps (a sweep
    /// per dial cost a 256-node run about 8 % of its host time while it connected).
    sweep_at: usize,
    /// Silenced nodes (see the module doc).
    silent: Vec<bool>,
}

/// The whole simulated network, shared by every node's transport.
#[derive(Clone)]
pub struct Network(Arc<Mutex<State>>);

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Network {
    pub fn new(nodes: usize, seed: u64, default_link: LinkSpec, uplink_mbit: Option<f64>) -> Self {
        let rate = uplink_mbit.map(|m| m * 1_000_000.0 / 8.0);
        Self(Arc::new(Mutex::new(State {
            nodes: (0..nodes)
                .map(|_| NodeNet {
                    uplink: Uplink::new(rate),
                    sent: 0,
                    listener: None,
                })
                .collect(),
            default_link,
            links: HashMap::new(),
            partition: None,
            clogs: HashMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_11ec),
            conns: Vec::new(),
            sweep_at: MIN_SWEEP,
            silent: vec![false; nodes],
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_link(&self, a: usize, b: usize, spec: LinkSpec) {
        self.lock().links.insert(pair(a, b), spec);
    }

    pub fn set_all_links(&self, spec: LinkSpec) {
        let mut s = self.lock();
        s.default_link = spec;
        s.links.clear();
    }

    /// Bytes each node has sent.
    pub fn bytes_sent(&self) -> Vec<u64> {
        self.lock().nodes.iter().map(|n| n.sent).collect()
    }

    /// Cuts the network into `groups`; nodes in no group form one more group.
    pub fn partition(&self, groups: &[Vec<usize>]) {
        let mut s = self.lock();
        let n = s.nodes.len();
        let mut of = vec![groups.len(); n];
        for (g, members) in groups.iter().enumerate() {
            for &m in members {
                if m < n {
                    of[m] = g;
                }
            }
        }
        for (a, b, x, y) in &s.conns {
            if of[*a] != of[*b] {
                for pipe in [x, y] {
                    if let Some(p) = pipe.upgrade() {
                        p.lock().unwrap_or_else(|e| e.into_inner()).break_link();
                    }
                }
            }
        }
        s.partition = Some(of);
    }

    pub fn heal(&self) {
        let mut s = self.lock();
        s.partition = None;
        s.clogs.clear();
    }

    /// Stalls the link between `a` and `b` for `time`.
    pub fn clog(&self, a: usize, b: usize, time: Duration) {
        self.lock().clogs.insert(pair(a, b), Instant::now() + time);
    }

    /// Silences `node` for the rest of the run (see the module doc).
    pub fn silence(&self, node: usize) {
        let mut s = self.lock();
        if let Some(flag) = s.silent.get_mut(node) {
            *flag = true;
        }
        // Readers parked on the node's pipes look again and find it silent.
        for (a, b, x, y) in &s.conns {
            if *a == node || *b == node {
                for pipe in [x, y] {
                    if let Some(p) = pipe.upgrade()
                        && let Some(w) = p.lock().unwrap_or_else(|e| e.into_inner()).reader.take()
                    {
                        w.wake();
                    }
                }
            }
        }
    }

    fn is_silent(&self, node: usize) -> bool {
        self.lock().silent.get(node).copied().unwrap_or(false)
    }

    /// Forgets a crashed node's listener; its connections die with its runtime.
    pub fn down(&self, node: usize) {
        let mut s = self.lock();
        s.nodes[node].listener = None;
        for (a, b, x, y) in &s.conns {
            if *a == node || *b == node {
                for pipe in [x, y] {
                    if let Some(p) = pipe.upgrade() {
                        p.lock().unwrap_or_else(|e| e.into_inner()).break_link();
                    }
                }
            }
        }
    }

    fn reachable(s: &State, a: usize, b: usize) -> bool {
        s.partition.as_ref().is_none_or(|of| of[a] == of[b])
    }

    /// The transport for node `me`.
    pub fn transport(&self, me: usize) -> SimTransport {
        SimTransport {
            net: self.clone(),
            me,
            listener: None,
            events: VecDeque::new(),
        }
    }

    fn connect(&self, from: usize, to: usize) -> io::Result<Conn> {
        let mut s = self.lock();
        if to >= s.nodes.len() || !Self::reachable(&s, from, to) {
            return Err(io::ErrorKind::ConnectionRefused.into());
        }
        let Some(listener) = s.nodes[to].listener.clone() else {
            return Err(io::ErrorKind::ConnectionRefused.into());
        };
        let forward = Arc::new(Mutex::new(Pipe::default()));
        let backward = Arc::new(Mutex::new(Pipe::default()));
        if s.conns.len() >= s.sweep_at {
            s.conns.retain(|(_, _, x, _)| x.strong_count() > 0);
            s.sweep_at = (2 * s.conns.len()).max(MIN_SWEEP);
        }
        s.conns.push((
            from,
            to,
            Arc::downgrade(&forward),
            Arc::downgrade(&backward),
        ));
        let local = Conn {
            net: self.clone(),
            me: from,
            peer: to,
            out: forward.clone(),
            inp: backward.clone(),
            write_wait: None,
            read_wait: None,
        };
        let remote = Conn {
            net: self.clone(),
            me: to,
            peer: from,
            out: backward,
            inp: forward,
            write_wait: None,
            read_wait: None,
        };
        listener
            .unbounded_send((from, remote))
            .map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
        Ok(local)
    }

    /// Stamps `len` bytes from `from` to `to`: how many may go now and when they arrive.
    fn send(&self, from: usize, to: usize, want: usize) -> Result<(usize, Instant), Duration> {
        let mut s = self.lock();
        let n = want.min(MAX_WRITE);
        let departed = s.nodes[from].uplink.queue(n)?;
        s.nodes[from].sent += n as u64;
        let spec = s
            .links
            .get(&pair(from, to))
            .copied()
            .unwrap_or(s.default_link);
        let mut delay = spec.latency;
        if !spec.jitter.is_zero() {
            let j = s.rng.random_range(0..=spec.jitter.as_micros() as u64);
            delay += Duration::from_micros(j);
        }
        if spec.loss > 0.0 && s.rng.random_bool(spec.loss.min(1.0)) {
            delay += RETRANSMIT;
        }
        let mut at = departed + delay;
        if let Some(until) = s.clogs.get(&pair(from, to)) {
            at = at.max(*until);
        }
        if s.silent[from] || s.silent[to] {
            // Never, within any run: the write is accepted and goes nowhere.
            at = Instant::now() + SILENCE;
        }
        Ok((n, at))
    }
}

#[derive(Default)]
struct Pipe {
    queue: VecDeque<(Instant, Bytes)>,
    last_at: Option<Instant>,
    closed: bool,
    broken: bool,
    reader: Option<Waker>,
}

impl Pipe {
    fn break_link(&mut self) {
        self.broken = true;
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }
}

/// One end of a simulated connection.
pub struct Conn {
    net: Network,
    me: usize,
    peer: usize,
    out: Arc<Mutex<Pipe>>,
    inp: Arc<Mutex<Pipe>>,
    write_wait: Option<Pin<Box<Sleep>>>,
    read_wait: Option<Pin<Box<Sleep>>>,
}

fn reset() -> io::Error {
    io::ErrorKind::ConnectionReset.into()
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(sleep) = self.write_wait.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.write_wait = None;
        }
        if self.out.lock().unwrap_or_else(|p| p.into_inner()).broken {
            return Poll::Ready(Err(reset()));
        }
        match self.net.send(self.me, self.peer, buf.len()) {
            Err(wait) => {
                let mut sleep = Box::pin(tokio::time::sleep(wait));
                let _ = sleep.as_mut().poll(cx);
                self.write_wait = Some(sleep);
                Poll::Pending
            }
            Ok((n, at)) => {
                let mut pipe = self.out.lock().unwrap_or_else(|p| p.into_inner());
                // Streams deliver in order: never before what was written earlier.
                let at = pipe.last_at.map_or(at, |l| l.max(at));
                pipe.last_at = Some(at);
                pipe.queue
                    .push_back((at, Bytes::copy_from_slice(&buf[..n])));
                if let Some(w) = pipe.reader.take() {
                    w.wake();
                }
                Poll::Ready(Ok(n))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut pipe = self.out.lock().unwrap_or_else(|p| p.into_inner());
        pipe.closed = true;
        if let Some(w) = pipe.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.net.is_silent(self.me) {
            // A stopped process reads nothing; it is never woken again.
            return Poll::Pending;
        }
        loop {
            if let Some(sleep) = self.read_wait.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.read_wait = None;
            }
            let inp = self.inp.clone();
            let mut pipe = inp.lock().unwrap_or_else(|p| p.into_inner());
            if pipe.broken {
                return Poll::Ready(Err(reset()));
            }
            let now = Instant::now();
            let closed = pipe.closed;
            match pipe.queue.front_mut() {
                Some((at, _)) if *at > now => {
                    let at = *at;
                    drop(pipe);
                    self.read_wait = Some(Box::pin(tokio::time::sleep_until(at)));
                    continue;
                }
                Some((_, data)) => {
                    let n = data.len().min(buf.len());
                    buf[..n].copy_from_slice(&data[..n]);
                    if n == data.len() {
                        pipe.queue.pop_front();
                    } else {
                        *data = data.slice(n..);
                    }
                    return Poll::Ready(Ok(n));
                }
                None if closed => return Poll::Ready(Ok(0)),
                None => {
                    pipe.reader = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The other end sees EOF on our outgoing pipe and a reset if it writes to us.
        for (pipe, closed) in [(&self.out, true), (&self.inp, false)] {
            let mut p = pipe.lock().unwrap_or_else(|e| e.into_inner());
            if closed {
                p.closed = true;
            } else {
                p.broken = true;
            }
            if let Some(w) = p.reader.take() {
                w.wake();
            }
        }
    }
}

/// Node `me`'s view of the simulated network, as a libp2p transport. It listens on
/// `/memory/<me + 1>` and dials `/memory/<n + 1>`.
pub struct SimTransport {
    net: Network,
    me: usize,
    listener: Option<(ListenerId, mpsc::UnboundedReceiver<(usize, Conn)>)>,
    events: VecDeque<TransportEvent<Ready<Result<Conn, io::Error>>, io::Error>>,
}

pub fn address(node: usize) -> Multiaddr {
    Multiaddr::empty().with(Protocol::Memory(node as u64 + 1))
}

fn node_of(addr: &Multiaddr) -> Option<usize> {
    addr.iter().find_map(|p| match p {
        Protocol::Memory(n) if n > 0 => Some(n as usize - 1),
        _ => None,
    })
}

impl Transport for SimTransport {
    type Output = Conn;
    type Error = io::Error;
    type ListenerUpgrade = Ready<Result<Conn, io::Error>>;
    type Dial = Pin<Box<dyn Future<Output = Result<Conn, io::Error>> + Send>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<io::Error>> {
        if !addr.iter().any(|p| matches!(p, Protocol::Memory(_))) {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        let (tx, rx) = mpsc::unbounded();
        self.net.lock().nodes[self.me].listener = Some(tx);
        self.listener = Some((id, rx));
        self.events.push_back(TransportEvent::NewAddress {
            listener_id: id,
            listen_addr: address(self.me),
        });
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        if self.listener.as_ref().is_some_and(|(l, _)| *l == id) {
            self.listener = None;
            self.net.lock().nodes[self.me].listener = None;
            return true;
        }
        false
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _: DialOpts,
    ) -> Result<Self::Dial, TransportError<io::Error>> {
        let Some(to) = node_of(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let net = self.net.clone();
        let me = self.me;
        Ok(Box::pin(async move { net.connect(me, to) }))
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(event);
        }
        let me = self.me;
        if let Some((id, rx)) = self.listener.as_mut()
            && let Poll::Ready(Some((from, conn))) = futures::StreamExt::poll_next_unpin(rx, cx)
        {
            return Poll::Ready(TransportEvent::Incoming {
                listener_id: *id,
                upgrade: futures::future::ready(Ok(conn)),
                local_addr: address(me),
                send_back_addr: address(from),
            });
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use futures::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn latency_bandwidth_and_partitions() {
        let net = Network::new(
            2,
            1,
            LinkSpec {
                latency: Duration::from_millis(30),
                ..LinkSpec::default()
            },
            Some(8.0),
        );
        let mut t1 = net.transport(1);
        t1.listen_on(ListenerId::next(), address(1)).unwrap();
        let mut a = net.connect(0, 1).unwrap();
        let (_, mut b) = futures::StreamExt::next(&mut t1.listener.as_mut().unwrap().1)
            .await
            .unwrap();
        let start = Instant::now();
        a.write_all(&[7u8; 100_000]).await.unwrap();
        let mut got = vec![0u8; 100_000];
        b.read_exact(&mut got).await.unwrap();
        // 100 kB at 1 MB/s (8 Mbit) takes about 0.1 s, plus 30 ms of latency.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(80), "{took:?}");
        assert_eq!(net.bytes_sent()[0], 100_000);
        net.partition(&[vec![0], vec![1]]);
        assert!(a.write_all(b"x").await.is_err());
        assert!(net.connect(0, 1).is_err());
        net.heal();
        assert!(net.connect(0, 1).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silenced_node_sends_and_reads_nothing_yet_stays_connected() {
        let net = Network::new(2, 1, LinkSpec::default(), None);
        let mut t1 = net.transport(1);
        t1.listen_on(ListenerId::next(), address(1)).unwrap();
        let mut a = net.connect(0, 1).unwrap();
        let (_, mut b) = futures::StreamExt::next(&mut t1.listener.as_mut().unwrap().1)
            .await
            .unwrap();
        a.write_all(b"before").await.unwrap();
        let mut got = [0u8; 6];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"before");
        net.silence(1);
        // Writes either way are accepted (no reset) and never arrive.
        a.write_all(b"to the silent one").await.unwrap();
        b.write_all(b"from the silent one").await.unwrap();
        let mut buf = [0u8; 1];
        let from_silent = tokio::time::timeout(Duration::from_secs(3600), a.read(&mut buf)).await;
        assert!(from_silent.is_err(), "nothing arrives from a silenced node");
        let to_silent = tokio::time::timeout(Duration::from_secs(3600), b.read(&mut buf)).await;
        assert!(to_silent.is_err(), "a silenced node reads nothing");
        assert!(net.connect(0, 1).is_ok(), "dials still connect");
    }

    #[tokio::test]
    async fn ended_connections_are_forgotten_and_live_ones_still_break() {
        let net = Network::new(2, 1, LinkSpec::default(), None);
        let mut t1 = net.transport(1);
        t1.listen_on(ListenerId::next(), address(1)).unwrap();
        let mut accept = || {
            let (_, remote) = t1.listener.as_mut().unwrap().1.try_recv().unwrap();
            remote
        };
        let mut kept = Vec::new();
        for i in 0..1000 {
            let local = net.connect(0, 1).unwrap();
            let remote = accept();
            if i % 100 == 0 {
                kept.push((local, remote));
            }
        }
        let listed = net.lock().conns.len();
        assert!(
            listed <= 2 * kept.len() + MIN_SWEEP,
            "{listed} connections listed for {} live",
            kept.len()
        );
        net.partition(&[vec![0], vec![1]]);
        for (local, _) in &mut kept {
            assert!(local.write_all(b"x").await.is_err());
        }
    }
}
