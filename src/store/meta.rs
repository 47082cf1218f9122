//! Changes to a namespace's blob records that move no bytes: labels, and
//! adopting content another namespace already holds.

use super::commit::write_synced;
use super::index::{self, cf, BlobMeta, CF_BLOBS, CF_META, CF_RECIPES};
use super::{now_secs, validate_namespace, BlobInfo, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};

impl Store {
    /// Applies `f` to a blob's record (labels, media type); `updated_at` becomes now.
    pub fn update_meta(
        &self,
        ns: &str,
        digest: &Digest,
        f: impl FnOnce(&mut BlobMeta) -> Result<()>,
    ) -> Result<BlobInfo> {
        validate_namespace(ns)?;
        let db = self.db();
        // The commit lock: a concurrent delete must not be undone by this write.
        let _commit = self.inner.counters.lock();
        let bkey = index::blob_key(ns, digest);
        let Some(v) = db.get_cf(cf(db, CF_BLOBS), &bkey)? else {
            return Err(Error::NotFound(format!(
                "blob {digest} not found in namespace {ns:?}"
            )));
        };
        let mut meta = BlobMeta::decode(&v)?;
        f(&mut meta)?;
        meta.updated_at = now_secs();
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(cf(db, CF_BLOBS), &bkey, meta.encode());
        self.publish_put(&mut batch, ns, digest, &meta)?;
        write_synced(db, batch)?;
        let content = self
            .content(digest)?
            .ok_or_else(|| Error::DataLoss(format!("recipe of {digest} missing")))?;
        Ok(BlobInfo {
            namespace: ns.to_string(),
            digest: *digest,
            content,
            meta,
        })
    }

    /// Records content that is already stored (in any namespace) as a blob of
    /// `ns`, without moving a byte. False when the content is not stored.
    pub fn adopt(&self, ns: &str, digest: &Digest) -> Result<bool> {
        validate_namespace(ns)?;
        let db = self.db();
        let mut counters = self.inner.counters.lock();
        let Some(mut content) = self.content(digest)? else {
            return Ok(false);
        };
        let bkey = index::blob_key(ns, digest);
        if db.get_cf(cf(db, CF_BLOBS), &bkey)?.is_some() {
            return Ok(true);
        }
        let now = now_secs();
        let meta = BlobMeta {
            created_at: now,
            updated_at: now,
            ..Default::default()
        };
        content.holders += 1;
        let mut c = *counters;
        c.blobs += 1;
        c.logical_bytes += content.size;
        c.logical_stream_bytes += content.stream_bytes();
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(cf(db, CF_BLOBS), &bkey, meta.encode());
        batch.put_cf(cf(db, CF_RECIPES), digest.0, content.encode());
        batch.put_cf(cf(db, CF_META), index::META_COUNTERS, c.encode());
        self.publish_put(&mut batch, ns, digest, &meta)?;
        write_synced(db, batch)?;
        *counters = c;
        Ok(true)
    }
}
