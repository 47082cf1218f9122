//! containerd's diff service (`containerd.services.diff.v1.Diff`) over the
//! store, so containerd 1.7 and 2.x can use strata as a proxy differ: `Apply`
//! unpacks a stored layer into a snapshot from its plain tar, read straight
//! from the chunks (a gzip or zstd layer is neither rebuilt nor decompressed),
//! with containerd's unpack semantics (`crate::unpack`).
//!
//! What strata cannot apply — an encrypted layer, a media type that is no
//! layer, a blob it does not hold — is answered `Unimplemented`, on which
//! containerd 1.7's diff service moves on to its next differ. containerd 2.x's
//! transfer service does not move on: under 2.x every layer must be applied
//! here, which is why every layer media type strata stores is.

mod mounts;
mod plain;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::proto::containerd::services::diff::v1 as pb;
use crate::proto::containerd::types::Descriptor;
use crate::store::Store;
use crate::unpack::{self, ApplyOptions};
use pb::diff_server::Diff;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};

/// Under the data directory: where non-overlay mounts are mounted while a
/// layer is applied.
pub const MOUNT_DIR: &str = "differ-mounts";

/// What an applied layer is: its uncompressed tar.
pub const APPLIED_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// Layer media types without their `+gzip`/`+zstd` suffix.
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// Why a layer of this media type is not applied here, if it is not.
fn refuse_media_type(media_type: &str) -> Option<String> {
    let (base, suffix) = media_type.split_once('+').unwrap_or((media_type, ""));
    if suffix.split('+').any(|s| s == "encrypted") {
        return Some(format!(
            "{media_type}: encrypted layers are not applied by strata"
        ));
    }
    if !LAYER_TYPES.contains(&base) || !matches!(suffix, "" | "gzip" | "zstd") {
        return Some(format!(
            "{media_type} is not a layer media type strata applies"
        ));
    }
    None
}

pub struct DiffService {
    store: Store,
    gate: super::Gate,
    /// For calls without a `containerd-namespace` header.
    default_namespace: String,
    /// Where non-overlay mounts are mounted while a layer is applied.
    mount_dir: PathBuf,
}

impl DiffService {
    pub fn new(
        store: Store,
        gate: super::Gate,
        default_namespace: String,
        mount_dir: PathBuf,
    ) -> Self {
        DiffService {
            store,
            gate,
            default_namespace,
            mount_dir,
        }
    }
}

/// Tells the apply to stop when the RPC goes away (the handler's future is
/// dropped when the client cancels or its deadline passes).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Undoes the mounts an apply interrupted by a crash left under `mount_dir`.
pub fn clean_stale(mount_dir: &std::path::Path) {
    if mount_dir.exists() {
        mounts::clean_stale(mount_dir);
    }
}

/// Applies the blob to the mounts; gives the plain tar's diff_id and size.
fn apply(
    store: &Store,
    digest: &Digest,
    content: &crate::store::Content,
    mounts: &[crate::proto::containerd::types::Mount],
    mount_dir: &std::path::Path,
    sync_fs: bool,
    cancel: Arc<AtomicBool>,
) -> Result<(Digest, u64)> {
    let root = mounts::Root::prepare(mounts, mount_dir)?;
    let mut tar = plain::PlainTar::open(store, digest, content)?;
    let opts = ApplyOptions {
        whiteouts: root.whiteouts,
        parents: root.parents.clone(),
        cancel: Some(cancel),
    };
    // The tar reader asks for 512-byte headers: serve them from a buffer.
    let mut buffered = std::io::BufReader::with_capacity(256 * 1024, &mut tar);
    unpack::apply(&root.path, &mut buffered, &opts)?;
    drop(buffered);
    let verbatim = tar.verbatim;
    let (diff_id, size) = tar
        .finish()
        .map_err(|e| Error::io(format!("reading the tar of {digest}"), e))?;
    // The store knows what the tar must hash to: a mismatch is damage.
    let expected = match &content.wrap {
        Some(w) => w.diff_id.map(Digest),
        None if verbatim => Some(*digest),
        None => None,
    };
    if let Some(want) = expected.filter(|w| *w != diff_id) {
        return Err(Error::DataLoss(format!(
            "the tar of {digest} hashes to {diff_id}, not to its recorded diff_id {want}"
        )));
    }
    if sync_fs {
        syncfs(&root.path)?;
    }
    drop(root);
    Ok((diff_id, size))
}

fn syncfs(dir: &std::path::Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f =
        std::fs::File::open(dir).map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
    // SAFETY: a valid open descriptor.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(Error::io(
            format!("syncing the filesystem of {}", dir.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl Diff for DiffService {
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let ns = super::containerd::request_namespace(&request, &self.default_namespace)?;
        let r = request.into_inner();
        let desc = r
            .diff
            .ok_or_else(|| Status::invalid_argument("ApplyRequest has no diff descriptor"))?;
        if !desc.digest.starts_with("sha256:") {
            return Err(Status::unimplemented(format!(
                "{}: strata stores sha256 blobs only",
                desc.digest
            )));
        }
        let digest = Digest::parse(&desc.digest)?;
        if let Some(why) = refuse_media_type(&desc.media_type) {
            return Err(Status::unimplemented(why));
        }
        // Only a blob the caller's namespace holds, as its content store would.
        let info = match self.store.stat(&ns, &digest) {
            Ok(i) => i,
            Err(Error::NotFound(_)) => {
                return Err(Status::unimplemented(format!(
                    "blob {digest} is not stored in strata (namespace {ns:?})"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        if desc.size > 0 && desc.size as u64 != info.content.size {
            return Err(Status::invalid_argument(format!(
                "{digest} is {} bytes, not {}",
                info.content.size, desc.size
            )));
        }
        let permit = self.gate.stream()?;
        let (store, dir) = (self.store.clone(), self.mount_dir.clone());
        let started = Instant::now();
        let mounts = r.mounts;
        let kind = mounts.first().map(|m| m.r#type.clone()).unwrap_or_default();
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let flag = cancel.0.clone();
        let (diff_id, size) = tokio::task::spawn_blocking(move || {
            // Counts against --max-streams until the apply is over.
            let _permit = permit;
            apply(
                &store,
                &digest,
                &info.content,
                &mounts,
                &dir,
                r.sync_fs,
                flag,
            )
        })
        .await
        .map_err(|e| Status::internal(format!("apply task failed: {e}")))?
        .inspect_err(|e| tracing::error!(%digest, error = %e, "applying a layer failed"))?;
        drop(cancel);
        tracing::info!(%digest, %diff_id, size, mount = %kind, secs = started.elapsed().as_secs_f64(), "applied a layer");
        Ok(Response::new(pb::ApplyResponse {
            applied: Some(Descriptor {
                media_type: APPLIED_MEDIA_TYPE.into(),
                digest: diff_id.to_string(),
                size: size as i64,
                annotations: Default::default(),
            }),
        }))
    }

    async fn diff(
        &self,
        _request: Request<pb::DiffRequest>,
    ) -> Result<Response<pb::DiffResponse>, Status> {
        Err(Status::unimplemented(
            "strata's differ only applies layers; creating one is left to containerd's own differ",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::refuse_media_type;

    #[test]
    fn every_stored_layer_type_is_applied() {
        for t in [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        ] {
            assert_eq!(refuse_media_type(t), None, "{t}");
        }
    }

    #[test]
    fn encrypted_and_foreign_types_are_left_to_containerd() {
        for t in [
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            "application/vnd.oci.image.layer.v1.tar+encrypted",
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+bzip2",
        ] {
            assert!(refuse_media_type(t).is_some(), "{t}");
        }
    }
}
