//! Deleting a blob from a namespace. The content's chunk references are
//! released when the last namespace lets go of it; chunks left at zero stay in
//! their packs (and can be reused) until garbage collection reclaims them.

use super::follow::{prefix_entry, PrefixKey};
use super::index::{
    self, cf, page_key, BlobMeta, CF_BLOBS, CF_META, CF_PREFIXES, CF_RECIPES, CF_REFCOUNTS,
};
use super::recipe::{decode_page, Segment};
use super::{validate_namespace, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};
use std::collections::HashMap;

impl Store {
    /// Removes a blob from a namespace; true when its content was released too.
    pub fn delete(&self, ns: &str, digest: &Digest) -> Result<bool> {
        validate_namespace(ns)?;
        let db = self.db();
        let mut counters = self.inner.counters.lock();
        let mut c = *counters;
        let bkey = index::blob_key(ns, digest);
        let Some(meta) = db.get_cf(cf(db, CF_BLOBS), &bkey)? else {
            return Err(Error::NotFound(format!(
                "blob {digest} not found in namespace {ns:?}"
            )));
        };
        BlobMeta::decode(&meta)?;
        let mut content = self.content(digest)?.ok_or_else(|| {
            Error::DataLoss(format!(
                "blob {digest} is recorded but its recipe is missing"
            ))
        })?;
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(cf(db, CF_BLOBS), &bkey);
        c.blobs -= 1;
        c.logical_bytes -= content.size;
        c.logical_stream_bytes = c
            .logical_stream_bytes
            .saturating_sub(content.stream_bytes());
        content.holders = content.holders.saturating_sub(1);
        let released = content.holders == 0;
        if released {
            let mut refs: HashMap<[u8; 32], u64> = HashMap::new();
            // The plain recipe's pages come first; they name its prefix entry.
            let plain_pages = content.page_starts.len() as u32;
            let mut prefix = PrefixKey::default();
            for page in 0..content.page_count() {
                let key = page_key(digest, page);
                let stored = db.get_pinned_cf(cf(db, CF_RECIPES), key)?.ok_or_else(|| {
                    Error::DataLoss(format!("recipe page {page} of {digest} is missing"))
                })?;
                for seg in decode_page(&stored)? {
                    if page < plain_pages {
                        if let Some(k) = prefix.segment(&seg) {
                            batch.delete_cf(cf(db, CF_PREFIXES), prefix_entry(&k, digest));
                        }
                    }
                    if let Segment::Chunk { hash, .. } = seg {
                        *refs.entry(hash).or_default() += 1;
                    }
                }
                batch.delete_cf(cf(db, CF_RECIPES), key);
            }
            let rc_cf = cf(db, CF_REFCOUNTS);
            let hashes: Vec<&[u8; 32]> = refs.keys().collect();
            let olds = db.multi_get_cf(hashes.iter().map(|h| (rc_cf, h.as_slice())));
            for (h, old) in hashes.iter().zip(olds) {
                let old = old?
                    .map(|v| v[..].try_into().map(u64::from_le_bytes))
                    .transpose()
                    .map_err(|_| Error::DataLoss("bad refcount".into()))?
                    .unwrap_or(0);
                let n = refs[*h];
                if old < n {
                    tracing::error!(
                        chunk = hex::encode(h),
                        old,
                        n,
                        "refcount lower than the references being released"
                    );
                }
                let new = old.saturating_sub(n);
                if new == 0 {
                    c.unreferenced_chunks += 1;
                }
                batch.put_cf(rc_cf, h, new.to_le_bytes());
            }
            if content.wrap.is_some() {
                batch.delete_cf(cf(db, CF_RECIPES), index::plan_key(digest));
            }
            batch.delete_cf(cf(db, CF_RECIPES), digest.0);
            c.rebuild_bytes -= content.wrap.as_ref().map_or(0, |w| w.extra_bytes);
            let s = &mut c.by_strategy[content.strategy() as usize];
            *s = s.saturating_sub(1);
            c.contents -= 1;
            c.literal_bytes -= content.literal_bytes;
        } else {
            batch.put_cf(cf(db, CF_RECIPES), digest.0, content.encode());
        }
        batch.put_cf(cf(db, CF_META), index::META_COUNTERS, c.encode());
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        db.write_opt(batch, &wo)?;
        *counters = c;
        Ok(released)
    }
}
