//! Deleting a blob from a namespace. The content's chunk references are
//! released when the last namespace lets go of it; chunks left at zero stay in
//! their packs (and can be reused) until garbage collection reclaims them.

use super::commit::{write_synced, Bases};
use super::index::{self, cf, BlobMeta, CF_BLOBS, CF_META, CF_RECIPES};
use super::remote::format::Record;
use super::{validate_namespace, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};

impl Store {
    /// Removes a blob from a namespace; true when its content was released too.
    /// With a bucket, the delete is a segment there first (`publish.rs`).
    pub fn delete(&self, ns: &str, digest: &Digest) -> Result<bool> {
        self.delete_as(ns, digest, true)
    }

    /// A delete read from the bucket: this index only.
    pub(super) fn delete_local(&self, ns: &str, digest: &Digest) -> Result<bool> {
        self.delete_as(ns, digest, false)
    }

    fn delete_as(&self, ns: &str, digest: &Digest, publish: bool) -> Result<bool> {
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
        // A plain tar that compressed blobs still share stays, held by none.
        let released = content.holders == 0 && content.variants == 0;
        let mut gone = Vec::new();
        if released {
            let mut bases = Bases::default();
            let refs = self.drop_content(&mut batch, &mut c, &mut bases, digest, &content)?;
            self.move_refs(&mut batch, &mut c, &refs)?;
            gone = bases.write(db, &mut batch);
            batch.delete_cf(cf(db, CF_RECIPES), digest.0);
            batch.delete_cf(cf(db, CF_META), index::mark_key(digest));
            c.contents -= 1;
        } else {
            batch.put_cf(cf(db, CF_RECIPES), digest.0, content.encode());
        }
        batch.put_cf(cf(db, CF_META), index::META_COUNTERS, c.encode());
        if publish {
            self.publish_records(
                &mut batch,
                vec![Record::Delete {
                    ns: ns.to_string(),
                    digest: *digest,
                }],
            )?;
        }
        write_synced(db, batch)?;
        *counters = c;
        drop(counters);
        if released {
            self.forget_recipe(digest);
        }
        for d in gone {
            self.forget_recipe(&d);
        }
        Ok(released)
    }
}
