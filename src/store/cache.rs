//! Small LRU caches for reads: decoded blocks, so reads in small windows
//! (containerd reads 32 KiB at a time) do not decompress the same block again
//! and again, and decoded recipe pages, for the same reason.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

/// An LRU map bounded by the summed weight of its values.
pub struct Lru<K, V> {
    inner: Mutex<Inner<K, V>>,
    capacity: usize,
    weight: fn(&V) -> usize,
}

struct Inner<K, V> {
    map: HashMap<K, (Arc<V>, u64)>,
    bytes: usize,
    tick: u64,
}

impl<K: Hash + Eq + Copy, V> Lru<K, V> {
    pub fn new(capacity: usize, weight: fn(&V) -> usize) -> Self {
        Lru {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                bytes: 0,
                tick: 0,
            }),
            capacity,
            weight,
        }
    }

    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        let mut g = self.inner.lock();
        g.tick += 1;
        let tick = g.tick;
        g.map.get_mut(key).map(|(v, t)| {
            *t = tick;
            v.clone()
        })
    }

    pub fn insert(&self, key: K, value: Arc<V>) {
        let w = (self.weight)(&value);
        let mut g = self.inner.lock();
        g.tick += 1;
        let tick = g.tick;
        g.bytes += w;
        if let Some((old, _)) = g.map.insert(key, (value, tick)) {
            g.bytes -= (self.weight)(&old);
        }
        // Evict least recently used; the map holds few entries, so a scan is cheap.
        while g.bytes > self.capacity && g.map.len() > 1 {
            let (&victim, _) = g
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .expect("non-empty");
            if let Some((v, _)) = g.map.remove(&victim) {
                g.bytes -= (self.weight)(&v);
            }
        }
    }

    /// Forgets every entry whose key passes `f` (e.g. blocks of a rewritten pack).
    pub fn forget(&self, f: impl Fn(&K) -> bool) {
        let mut g = self.inner.lock();
        let keys: Vec<K> = g.map.keys().filter(|k| f(k)).copied().collect();
        for k in keys {
            if let Some((v, _)) = g.map.remove(&k) {
                g.bytes -= (self.weight)(&v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_capacity() {
        let c: Lru<(u32, u64), Vec<u8>> = Lru::new(300, |v| v.len());
        c.insert((1, 0), Arc::new(vec![0; 100]));
        c.insert((1, 1), Arc::new(vec![0; 100]));
        c.insert((1, 2), Arc::new(vec![0; 100]));
        assert!(c.get(&(1, 0)).is_some());
        c.insert((1, 3), Arc::new(vec![0; 100]));
        assert!(
            c.get(&(1, 1)).is_none(),
            "the least recently used entry goes first"
        );
        assert!(c.get(&(1, 0)).is_some() && c.get(&(1, 3)).is_some());
        c.forget(|k| k.0 == 1);
        assert!(c.get(&(1, 0)).is_none());
    }
}
