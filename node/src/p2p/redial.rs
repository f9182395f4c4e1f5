//! When to dial each bootstrap address again.
//!
//! A peer at its connection limit completes the whole handshake (noise, then the muxer) before
//! its limits refuse the connection, and the dialer sees a connection that opens and closes at
//! once. Redialing every few seconds, as this node once did, cost such a hub a handshake per
//! waiting peer every few seconds, for as long as it stayed full. So an address that leads
//! nowhere, or only to connections that close at once, is dialed less and less often (the
//! delay doubles up to [`LONGEST`]); a connection that had lasted [`STABLE`] makes its address
//! due again when it ends, dialed at the next [`TICK`], so a node that was offline or
//! partitioned is found again soon after the network heals.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
use tokio::time::Instant;

/// How often the event loop asks which addresses are due. Every delay is a multiple of it.
pub const TICK: Duration = Duration::from_secs(5);
/// The delay after a first dial that led to no lasting connection.
pub const FIRST: Duration = TICK;
/// The longest delay between two dials of one address.
pub const LONGEST: Duration = Duration::from_secs(120);
/// A connection that lasted this long was not refused: when it ends, its address is due again
/// at once (dialed at the next tick). A refused one closes about one round trip after it
/// opened.
pub const STABLE: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Entry {
    addr: Multiaddr,
    /// From the address's `/p2p/` part, or learned from the last connection dialed to it.
    peer: Option<PeerId>,
    /// Whether `peer` came from the address itself; a learned one is replaced when another
    /// node answers there (a new key, or the address now someone else's).
    named: bool,
    delay: Duration,
    next: Instant,
    connected_since: Option<Instant>,
}

/// The bootstrap addresses and when each is due.
#[derive(Debug)]
pub struct Redial {
    entries: Vec<Entry>,
}

impl Redial {
    /// Every address due at once.
    pub fn new(addrs: Vec<Multiaddr>, now: Instant) -> Self {
        let entries = addrs
            .into_iter()
            .map(|addr| Entry {
                peer: peer_of(&addr),
                named: peer_of(&addr).is_some(),
                addr,
                delay: FIRST,
                next: now,
                connected_since: None,
            })
            .collect();
        Self { entries }
    }

    /// The addresses to dial now, each with its peer when known. Each one returned is not due
    /// again before its delay, which then doubles (until a lasting connection resets it).
    /// Asked once a tick: an address falls due at the tick nearest its time, so a tick that
    /// comes a little earlier after its delay than the last one did is not missed.
    pub fn due(&mut self, now: Instant) -> Vec<(Multiaddr, Option<PeerId>)> {
        let mut out = Vec::new();
        for e in &mut self.entries {
            if e.connected_since.is_some() || now + TICK / 2 < e.next {
                continue;
            }
            e.next = now + e.delay;
            e.delay = (e.delay * 2).min(LONGEST);
            out.push((e.addr.clone(), e.peer));
        }
        out
    }

    /// A connection to `peer` opened; `dialed` is the address this node dialed, if it dialed.
    pub fn connected(&mut self, peer: PeerId, dialed: Option<&Multiaddr>, now: Instant) {
        for e in &mut self.entries {
            if !e.named && e.peer != Some(peer) && dialed.is_some_and(|a| same_place(a, &e.addr)) {
                e.peer = Some(peer);
                e.connected_since = None;
            }
            if e.peer == Some(peer) && e.connected_since.is_none() {
                e.connected_since = Some(now);
            }
        }
    }

    /// The last connection to `peer` closed.
    pub fn disconnected(&mut self, peer: PeerId, now: Instant) {
        for e in &mut self.entries {
            if e.peer != Some(peer) {
                continue;
            }
            if let Some(since) = e.connected_since.take()
                && now.saturating_duration_since(since) >= STABLE
            {
                e.delay = FIRST;
                e.next = now;
            }
        }
    }
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// Whether two addresses name the same place, whether or not either ends in `/p2p/…`.
fn same_place(a: &Multiaddr, b: &Multiaddr) -> bool {
    let place = |m: &Multiaddr| {
        m.iter()
            .filter(|p| !matches!(p, Protocol::P2p(_)))
            .collect::<Multiaddr>()
    };
    place(a) == place(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16, peer: Option<PeerId>) -> Multiaddr {
        let mut a: Multiaddr = format!("/ip4/192.0.2.1/tcp/{port}").parse().unwrap();
        if let Some(p) = peer {
            a.push(Protocol::P2p(p));
        }
        a
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// The ticks in `from..to` seconds after `t0` (multiples of 5 s) at which `redial` gave
    /// anything to dial. Each tick comes a little late, by less each time, as the ticks of a
    /// busy event loop do.
    fn dials(redial: &mut Redial, t0: Instant, from: u64, to: u64) -> Vec<u64> {
        (from..to)
            .step_by(5)
            .filter(|s| {
                let late = Duration::from_millis(40 - (s / 5) % 40);
                !redial.due(t0 + secs(*s) + late).is_empty()
            })
            .collect()
    }

    #[test]
    fn an_address_that_leads_nowhere_is_dialed_less_and_less_often() {
        let t0 = Instant::now();
        let mut redial = Redial::new(vec![addr(1, Some(PeerId::random()))], t0);
        assert_eq!(
            dials(&mut redial, t0, 0, 600),
            [0, 5, 15, 35, 75, 155, 275, 395, 515],
            "5 s, then doubling up to 120 s"
        );
    }

    #[test]
    fn a_refused_connection_backs_off_and_a_lasting_one_is_redialed_at_the_next_tick() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let hub = PeerId::random();
        let mut redial = Redial::new(vec![addr(1, Some(hub))], t0);
        assert_eq!(dials(&mut redial, t0, 0, 5), [0]);

        // The hub is full: the connection opens and closes at once, after two dials.
        redial.connected(hub, None, t0 + ms(100));
        redial.disconnected(hub, t0 + ms(150));
        assert_eq!(dials(&mut redial, t0, 5, 40), [5, 15, 35]);
        redial.connected(hub, None, t0 + secs(35) + ms(100));
        redial.disconnected(hub, t0 + secs(36));
        assert_eq!(dials(&mut redial, t0, 40, 80), [75], "still backing off");

        // Now the connection holds, and nothing is dialed while it does.
        redial.connected(hub, None, t0 + secs(76));
        assert!(dials(&mut redial, t0, 80, 600).is_empty(), "connected");
        // It had lasted: its end makes the address due at the next tick, with the first
        // delay again.
        redial.disconnected(hub, t0 + secs(601));
        assert_eq!(dials(&mut redial, t0, 605, 630), [605, 610, 620]);
    }

    #[test]
    fn an_address_without_a_peer_id_learns_it_from_the_connection_it_leads_to() {
        let t0 = Instant::now();
        let bare = addr(2, None);
        let mut redial = Redial::new(vec![bare.clone()], t0);
        assert_eq!(redial.due(t0), [(bare.clone(), None)]);
        let peer = PeerId::random();
        // Connections this node did not dial, or dialed elsewhere, teach it nothing.
        redial.connected(peer, None, t0);
        redial.connected(peer, Some(&addr(3, None)), t0);
        assert_eq!(
            dials(&mut redial, t0, 5, 10),
            [5],
            "not known to be connected"
        );
        redial.connected(peer, Some(&addr(2, Some(peer))), t0 + secs(6));
        assert!(
            dials(&mut redial, t0, 10, 300).is_empty(),
            "connected to the peer behind the address"
        );
        redial.disconnected(peer, t0 + secs(400));
        assert_eq!(redial.due(t0 + secs(400)), [(bare.clone(), Some(peer))]);

        // Another node answers there now: it is the one that counts from then on.
        let other = PeerId::random();
        redial.connected(other, Some(&bare), t0 + secs(401));
        redial.connected(peer, None, t0 + secs(402));
        redial.disconnected(peer, t0 + secs(500));
        assert!(
            dials(&mut redial, t0, 405, 600).is_empty(),
            "connected to the node now behind the address"
        );
        redial.disconnected(other, t0 + secs(600));
        assert_eq!(redial.due(t0 + secs(600)), [(bare, Some(other))]);
    }
}
