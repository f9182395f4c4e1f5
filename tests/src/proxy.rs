//! A TCP proxy in front of a node that breaks connections on cue, for tests of how the client
//! lives through a bad network: cut every connection after it carried some bytes upstream (a
//! middlebox with a transfer cap), or go silent one way after some bytes (a stalled link).
//! The upstream address can change while it runs, as when a node restarts on another port.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread,
};

/// What the proxy does to the traffic it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass everything.
    None,
    /// Close each connection, both ways, once it has carried this many bytes upstream.
    CutEachConnectionAfter(u64),
    /// Stop passing bytes upstream on each connection once it has carried this many; the
    /// connection stays open, silent, until the upstream closes it.
    FreezeEachConnectionAfter(u64),
    /// Stop passing bytes downstream, on every connection, once this many have gone down in
    /// all (connections stay open, silent).
    FreezeDownstreamAfter(u64),
}

struct Shared {
    upstream: Mutex<SocketAddr>,
    fault: Mutex<Fault>,
    cuts: AtomicU64,
    downstream: AtomicU64,
}

/// A running proxy; it serves until the test process ends.
pub struct Proxy {
    pub url: String,
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn start(upstream_url: &str, fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            upstream: Mutex::new(addr_of(upstream_url)),
            fault: Mutex::new(fault),
            cuts: AtomicU64::new(0),
            downstream: AtomicU64::new(0),
        });
        let state = Arc::clone(&shared);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let state = Arc::clone(&state);
                thread::spawn(move || relay(client, &state));
            }
        });
        Self { url, shared }
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault;
    }

    /// Sends new connections to another node (one restarted on a new port, say).
    pub fn set_upstream(&self, upstream_url: &str) {
        *self.shared.upstream.lock().unwrap() = addr_of(upstream_url);
    }

    /// Connections cut by [`Fault::CutEachConnectionAfter`] so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Bytes passed downstream so far, over all connections.
    pub fn downstream_bytes(&self) -> u64 {
        self.shared.downstream.load(Ordering::SeqCst)
    }
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// Carries one connection until either side closes it or the fault ends it. A connection
/// the upstream refuses is closed at once, as a load balancer with no healthy backend does.
fn relay(client: TcpStream, state: &Arc<Shared>) {
    let upstream_addr = *state.upstream.lock().unwrap();
    let Ok(upstream) = TcpStream::connect(upstream_addr) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (client_r, upstream_w) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let closed = Arc::new(Closed::default());
    let (down_state, down_closed) = (Arc::clone(state), Arc::clone(&closed));
    let down = thread::spawn(move || {
        pump_down(upstream, client, &down_state);
        down_closed.set();
    });
    pump_up(client_r, upstream_w, state, &closed);
    let _ = down.join();
}

/// Set once a connection's downstream side has ended, which is what a frozen upstream side
/// waits for.
#[derive(Default)]
struct Closed {
    done: Mutex<bool>,
    changed: Condvar,
}

impl Closed {
    fn set(&self) {
        *self.done.lock().unwrap() = true;
        self.changed.notify_all();
    }

    fn wait(&self) {
        let mut done = self.done.lock().unwrap();
        while !*done {
            done = self.changed.wait(done).unwrap();
        }
    }
}

fn pump_up(mut from: TcpStream, mut to: TcpStream, state: &Shared, closed: &Closed) {
    let mut carried = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let fault = *state.fault.lock().unwrap();
        let limit = match fault {
            Fault::CutEachConnectionAfter(limit) | Fault::FreezeEachConnectionAfter(limit) => limit,
            Fault::None | Fault::FreezeDownstreamAfter(_) => u64::MAX,
        };
        let room = limit.saturating_sub(carried);
        let take = n.min(usize::try_from(room).unwrap_or(usize::MAX));
        if to.write_all(&buf[..take]).is_err() {
            break;
        }
        carried += take as u64;
        if carried >= limit {
            if let Fault::FreezeEachConnectionAfter(_) = fault {
                // Hold everything: the client's writes back up, the upstream hears nothing,
                // until the upstream gives up on the connection (or dies).
                closed.wait();
            } else {
                state.cuts.fetch_add(1, Ordering::SeqCst);
            }
            break;
        }
    }
    // Either side gone, or cut: the whole connection goes, both ways.
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

fn pump_down(mut from: TcpStream, mut to: TcpStream, state: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut take = n;
        if let Fault::FreezeDownstreamAfter(limit) = *state.fault.lock().unwrap() {
            let room = limit.saturating_sub(state.downstream.load(Ordering::SeqCst));
            take = take.min(usize::try_from(room).unwrap_or(usize::MAX));
        }
        if take > 0 && to.write_all(&buf[..take]).is_err() {
            break;
        }
        state.downstream.fetch_add(take as u64, Ordering::SeqCst);
        if take < n {
            // Frozen: hold the connection open and pass nothing more. The read side keeps
            // draining so the upstream is not blocked; it ends when the client hangs up
            // (`pump_up` then shuts both sockets, and this read fails).
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
