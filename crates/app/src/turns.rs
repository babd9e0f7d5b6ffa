//! Turns by key: work on one key (a command id, an address) waits for the work on the
//! same key before it, first come first served, while work on other keys goes on beside
//! it. A key is forgotten once nobody holds or waits for its turn.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

type Line = Arc<tokio::sync::Mutex<()>>;

/// The turns of one set of keys. Clones share them.
pub struct Turns<K> {
    lines: Arc<Mutex<HashMap<K, Line>>>,
}

impl<K> Clone for Turns<K> {
    fn clone(&self) -> Self {
        Self {
            lines: self.lines.clone(),
        }
    }
}

impl<K> Default for Turns<K> {
    fn default() -> Self {
        Self {
            lines: Arc::default(),
        }
    }
}

impl<K: Hash + Eq + Clone> Turns<K> {
    /// Waits for `key`'s turn; it lasts until the [`Turn`] is dropped (also when the
    /// waiting future is, so a cancelled caller leaves nothing behind).
    pub async fn take(&self, key: K) -> Turn<K> {
        let line = self
            .lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone();
        let mut turn = Turn {
            turns: self.clone(),
            key,
            line: line.clone(),
            held: None,
        };
        turn.held = Some(line.lock_owned().await);
        turn
    }
}

/// One holder's turn at its key; the next one waiting goes when it is dropped.
pub struct Turn<K: Hash + Eq> {
    turns: Turns<K>,
    key: K,
    line: Line,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<K: Hash + Eq> Drop for Turn<K> {
    fn drop(&mut self) {
        self.held.take();
        let mut lines = self
            .turns
            .lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Nobody else holds or waits (the map's reference and this one): forget the key.
        if Arc::strong_count(&self.line) == 2 {
            lines.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_key_takes_turns_in_order_and_is_forgotten_when_free() {
        let turns: Turns<&str> = Turns::default();
        let first = turns.take("a").await;
        let other = turns.take("b").await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let waiting = {
            let (turns, order) = (turns.clone(), order.clone());
            tokio::spawn(async move {
                let _second = turns.take("a").await;
                order.lock().unwrap().push("second");
            })
        };
        tokio::task::yield_now().await;
        order.lock().unwrap().push("first");
        drop(first);
        waiting.await.unwrap();
        assert_eq!(*order.lock().unwrap(), vec!["first", "second"]);
        drop(other);
        assert!(
            turns.lines.lock().unwrap().is_empty(),
            "free keys are forgotten"
        );
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_nothing_behind() {
        let turns: Turns<u32> = Turns::default();
        let held = turns.take(1).await;
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(10), turns.take(1));
        assert!(waiting.await.is_err());
        drop(held);
        assert!(turns.lines.lock().unwrap().is_empty());
    }
}
