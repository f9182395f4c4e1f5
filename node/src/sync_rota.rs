//! Which connected peers a periodic sync round pulls from: a few at a time, in turn.
//!
//! Pulling from every connected peer each round costs a node one stream per peer per round,
//! and a peer with many connections answers that many pulls per round: in a federation where
//! Kademlia keeps dozens of connections per node, the pulls of an idle cluster grow with the
//! number of nodes times their connections.
//! Periodic rounds are only the safety net: new records are gossiped and every peer they are
//! shared with is poked to pull, and a new connection is pulled from at once. So a round takes
//! the next few peers in peer-id order after the last one it pulled from, and every connected
//! peer is pulled from within `ceil(connected / per_round)` rounds.

use libp2p::PeerId;

/// The rotation's position: the last peer a round pulled from.
#[derive(Debug, Default)]
pub struct SyncRota {
    last: Option<PeerId>,
}

impl SyncRota {
    /// The peers this round pulls from: up to `per_round` of `connected`, starting after the
    /// last one pulled from and wrapping around.
    pub fn next_round(&mut self, mut connected: Vec<PeerId>, per_round: usize) -> Vec<PeerId> {
        // Keys of the peer map: sorted here, never repeated.
        connected.sort_unstable();
        if connected.len() <= per_round {
            self.last = connected.last().copied();
            return connected;
        }
        let start = match self.last {
            Some(last) => connected.partition_point(|p| *p <= last),
            None => 0,
        };
        let round: Vec<PeerId> = connected
            .iter()
            .cycle()
            .skip(start)
            .take(per_round)
            .copied()
            .collect();
        self.last = round.last().copied();
        round
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn every_peer_is_pulled_from_within_its_share_of_rounds() {
        let connected = peers(20);
        let mut rota = SyncRota::default();
        let mut pulls: HashMap<PeerId, usize> = HashMap::new();
        // ceil(20 / 8) = 3 rounds cover everyone; 15 rounds cover everyone 6 times.
        for round in 0..15 {
            let chosen = rota.next_round(connected.clone(), 8);
            assert_eq!(chosen.len(), 8, "round {round}");
            for p in chosen {
                *pulls.entry(p).or_default() += 1;
            }
            if round == 2 {
                assert_eq!(pulls.len(), 20, "three rounds reach every peer");
            }
        }
        assert!(pulls.values().all(|&n| n == 6), "{pulls:?}");
    }

    #[test]
    fn few_peers_are_all_pulled_from_each_round() {
        let connected = peers(5);
        let mut rota = SyncRota::default();
        for _ in 0..3 {
            let mut chosen = rota.next_round(connected.clone(), 8);
            chosen.sort_unstable();
            let mut all = connected.clone();
            all.sort_unstable();
            assert_eq!(chosen, all);
        }
    }

    #[test]
    fn the_turn_survives_peers_coming_and_going() {
        let mut connected = peers(10);
        connected.sort_unstable();
        let mut rota = SyncRota::default();
        assert_eq!(rota.next_round(connected.clone(), 4), connected[0..4]);
        // The last peer pulled from leaves: the next round starts after where it was.
        let gone = connected.remove(3);
        assert_eq!(rota.last, Some(gone));
        assert_eq!(rota.next_round(connected.clone(), 4), connected[3..7]);
        // And wraps around.
        assert_eq!(
            rota.next_round(connected.clone(), 4),
            [connected[7], connected[8], connected[0], connected[1]]
        );
    }
}
