//! The version-checked state cache shared by aggregates and facts.
//!
//! A cached state is a fold of a stream up to a known version. It is never trusted on its
//! own: the service first asks the store for the streams' current versions (one round
//! trip for all of them), then catches up each cached state from its version, replaying
//! the whole stream only on a miss. So a decision never rests on a fact older than one a
//! caller was already told was recorded.

use homeroom_domain::State;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

const SHARDS: usize = 32;

/// A state folded up to `version` of its stream.
#[derive(Debug, Clone)]
pub struct CachedState {
    /// The stream version the state includes (0 for a stream with no events).
    pub version: u64,
    /// The folded state.
    pub state: State,
}

struct Entry {
    cached: CachedState,
    last_used: u64,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<String, Entry>,
    clock: u64,
}

/// A bounded, sharded map from stream name to folded state.
pub struct StateCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    hasher: RandomState,
}

impl StateCache {
    /// A cache holding about `capacity` streams; the least recently used go first.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: (capacity / SHARDS).max(16),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, stream: &str) -> std::sync::MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(stream) as usize) % self.shards.len();
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached state of `stream`, if any.
    pub fn get(&self, stream: &str) -> Option<CachedState> {
        let mut shard = self.shard(stream);
        shard.clock += 1;
        let now = shard.clock;
        shard.entries.get_mut(stream).map(|e| {
            e.last_used = now;
            e.cached.clone()
        })
    }

    /// Stores `cached` unless a newer version is already there.
    pub fn put(&self, stream: &str, cached: CachedState) {
        let mut shard = self.shard(stream);
        shard.clock += 1;
        let now = shard.clock;
        if let Some(existing) = shard.entries.get_mut(stream) {
            if existing.cached.version <= cached.version {
                existing.cached = cached;
            }
            existing.last_used = now;
            return;
        }
        if shard.entries.len() >= self.per_shard {
            evict_least_recently_used(&mut shard.entries, self.per_shard / 4);
        }
        shard.entries.insert(
            stream.to_owned(),
            Entry {
                cached,
                last_used: now,
            },
        );
    }

    /// Forgets `stream` (after a conflict shows the cached copy is behind).
    pub fn forget(&self, stream: &str) {
        self.shard(stream).entries.remove(stream);
    }
}

fn evict_least_recently_used(entries: &mut HashMap<String, Entry>, count: usize) {
    let mut ages: Vec<(u64, String)> = entries
        .iter()
        .map(|(k, e)| (e.last_used, k.clone()))
        .collect();
    ages.sort_unstable();
    for (_, key) in ages.into_iter().take(count.max(1)) {
        entries.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use homeroom_domain::StreamRef;

    fn state() -> State {
        StreamRef::District.initial_state()
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one() {
        let cache = StateCache::new(100);
        cache.put(
            "s",
            CachedState {
                version: 5,
                state: state(),
            },
        );
        cache.put(
            "s",
            CachedState {
                version: 3,
                state: state(),
            },
        );
        assert_eq!(cache.get("s").unwrap().version, 5);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = StateCache::new(SHARDS * 16);
        for i in 0..10_000 {
            cache.put(
                &format!("s{i}"),
                CachedState {
                    version: 1,
                    state: state(),
                },
            );
        }
        let total: usize = cache
            .shards
            .iter()
            .map(|s| s.lock().unwrap().entries.len())
            .sum();
        assert!(total <= SHARDS * 16, "cache holds {total} entries");
        assert!(cache.get("s9999").is_some(), "the newest entry is kept");
    }
}
