//! Turns for blob fetches: how many transfer at once, and how many check and store their blob
//! at once. A fetch takes its place among those storing before it gives its transfer turn
//! back, so a disk that falls behind holds the transfers up too, and neither stage grows
//! without bound.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The two bounds of one node's fetches.
#[derive(Debug)]
pub struct Turns {
    transfer: Arc<Semaphore>,
    store: Arc<Semaphore>,
    stores: usize,
}

/// A fetch's turn to transfer its blob.
#[derive(Debug)]
pub struct TransferTurn {
    _permit: OwnedSemaphorePermit,
    store: Arc<Semaphore>,
}

/// A fetch's place among those checking and storing their blob.
#[derive(Debug)]
pub struct StorePlace {
    _permit: OwnedSemaphorePermit,
}

impl Turns {
    pub fn new(transfers: usize, stores: usize) -> Self {
        Self {
            transfer: Arc::new(Semaphore::new(transfers.max(1))),
            store: Arc::new(Semaphore::new(stores.max(1))),
            stores: stores.max(1),
        }
    }

    /// Places to check and store taken now.
    pub fn storing(&self) -> usize {
        self.stores - self.store.available_permits()
    }

    /// Waits for a turn to transfer. `None` only if the turns were closed, which they never
    /// are.
    pub async fn transfer(&self) -> Option<TransferTurn> {
        let permit = self.transfer.clone().acquire_owned().await.ok()?;
        Some(TransferTurn {
            _permit: permit,
            store: self.store.clone(),
        })
    }
}

impl TransferTurn {
    /// Waits for a place to check and store the blob, holding this turn meanwhile, and gives
    /// the turn back once it has one.
    pub async fn store(self) -> Option<StorePlace> {
        let place = self.store.clone().acquire_owned().await.ok()?;
        Some(StorePlace { _permit: place })
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_fetch_takes_its_place_to_store_before_it_gives_its_turn_back() {
        let turns = Turns::new(1, 1);
        let first = turns.transfer().await.unwrap();
        let storing = first.store().await.unwrap();
        let second = turns
            .transfer()
            .now_or_never()
            .expect("the first gave its turn back once it could store")
            .unwrap();
        // Nowhere to store: the second keeps its turn while it waits for a place.
        let mut waiting = std::pin::pin!(second.store());
        assert!(futures::poll!(&mut waiting).is_pending());
        assert!(
            turns.transfer().now_or_never().is_none(),
            "no third transfer while the second waits to store"
        );
        drop(storing);
        let _second_storing = waiting.await.unwrap();
        assert!(
            turns.transfer().now_or_never().is_some(),
            "the second's turn is back once it stores"
        );
    }
}
