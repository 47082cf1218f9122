//! A small cache of decoded blocks, so reads in small windows (containerd reads
//! 32 KiB at a time) do not decompress the same block again and again.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

pub type BlockKey = (u32, u64);

pub struct BlockCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    map: HashMap<BlockKey, (Arc<Vec<u8>>, u64)>,
    bytes: usize,
    tick: u64,
}

impl BlockCache {
    pub fn new(capacity: usize) -> Self {
        BlockCache {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                bytes: 0,
                tick: 0,
            }),
            capacity,
        }
    }

    pub fn get(&self, key: BlockKey) -> Option<Arc<Vec<u8>>> {
        let mut g = self.inner.lock();
        g.tick += 1;
        let tick = g.tick;
        g.map.get_mut(&key).map(|(v, t)| {
            *t = tick;
            v.clone()
        })
    }

    pub fn insert(&self, key: BlockKey, block: Arc<Vec<u8>>) {
        let mut g = self.inner.lock();
        g.tick += 1;
        let tick = g.tick;
        g.bytes += block.len();
        if let Some((old, _)) = g.map.insert(key, (block, tick)) {
            g.bytes -= old.len();
        }
        // Evict least recently used; the map holds a few dozen blocks, so a scan is cheap.
        while g.bytes > self.capacity && g.map.len() > 1 {
            let (&victim, _) = g
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .expect("non-empty");
            if let Some((v, _)) = g.map.remove(&victim) {
                g.bytes -= v.len();
            }
        }
    }

    /// Forgets blocks of a pack that is being removed or rewritten.
    pub fn forget_pack(&self, pack: u32) {
        let mut g = self.inner.lock();
        let keys: Vec<_> = g.map.keys().filter(|k| k.0 == pack).copied().collect();
        for k in keys {
            if let Some((v, _)) = g.map.remove(&k) {
                g.bytes -= v.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_capacity() {
        let c = BlockCache::new(300);
        c.insert((1, 0), Arc::new(vec![0; 100]));
        c.insert((1, 1), Arc::new(vec![0; 100]));
        c.insert((1, 2), Arc::new(vec![0; 100]));
        assert!(c.get((1, 0)).is_some());
        c.insert((1, 3), Arc::new(vec![0; 100]));
        assert!(
            c.get((1, 1)).is_none(),
            "the least recently used block goes first"
        );
        assert!(c.get((1, 0)).is_some() && c.get((1, 3)).is_some());
        c.forget_pack(1);
        assert!(c.get((1, 0)).is_none());
    }
}
