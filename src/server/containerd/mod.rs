//! containerd's content API (`containerd.services.content.v1.Content`) over the
//! store, so containerd can use strata as its proxy content store.
//!
//! Namespaces: the `containerd-namespace` header picks one when sent; without
//! it the listener's default applies (Debian's containerd sends none, and
//! containerd's GC never does). Blobs are per namespace, chunks are shared, so
//! containerd's GC (which deletes every blob its own database does not know)
//! only ever touches the namespace it writes in.

mod filters;
mod write;

use crate::digest::Digest;
use crate::error::Error;
use crate::proto::containerd::services::content::v1 as pb;
use crate::store::uploads::UploadStatus;
use crate::store::{validate_namespace, BlobInfo, Store};
use filters::Filters;
use pb::content_server::Content;
use std::pin::Pin;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// containerd's limit on one label's key and value together.
const MAX_LABEL_BYTES: usize = 4096;
const LIST_BATCH: usize = 100;
/// Reads up to this size are served inline rather than streamed from a worker.
const SMALL_READ_BYTES: u64 = 256 * 1024;

pub struct ContentService {
    store: Store,
    default_namespace: String,
    gate: super::Gate,
}

impl ContentService {
    pub fn new(store: Store, default_namespace: String, gate: super::Gate) -> Self {
        ContentService {
            store,
            default_namespace,
            gate,
        }
    }

    fn namespace<T>(&self, req: &Request<T>) -> Result<String, Status> {
        request_namespace(req, &self.default_namespace)
    }
}

/// The `containerd-namespace` header's namespace, else `default`.
pub fn request_namespace<T>(req: &Request<T>, default: &str) -> Result<String, Status> {
    match req.metadata().get("containerd-namespace") {
        Some(v) => {
            let ns = v
                .to_str()
                .map_err(|_| Status::invalid_argument("containerd-namespace is not text"))?;
            validate_namespace(ns)?;
            Ok(ns.to_string())
        }
        None => Ok(default.to_string()),
    }
}

pub fn timestamp_secs(s: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: s,
        nanos: 0,
    }
}

pub fn timestamp_nanos(n: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: n.div_euclid(1_000_000_000),
        nanos: n.rem_euclid(1_000_000_000) as i32,
    }
}

fn info_pb(b: &BlobInfo) -> pb::Info {
    pb::Info {
        digest: b.digest.to_string(),
        size: b.content.size as i64,
        created_at: Some(timestamp_secs(b.meta.created_at)),
        updated_at: Some(timestamp_secs(b.meta.updated_at)),
        labels: b.meta.labels.clone().into_iter().collect(),
    }
}

pub fn status_pb(s: &UploadStatus) -> pb::Status {
    pb::Status {
        started_at: Some(timestamp_nanos(s.record.started_at)),
        updated_at: Some(timestamp_nanos(s.record.updated_at)),
        r#ref: s.record.reference.clone(),
        offset: s.offset as i64,
        total: s.record.total,
        expected: s.record.expected.clone(),
    }
}

fn check_label(k: &str, v: &str) -> Result<(), Status> {
    if k.is_empty() {
        return Err(Status::invalid_argument("label key is empty"));
    }
    if k.len() + v.len() > MAX_LABEL_BYTES {
        return Err(Status::invalid_argument(format!(
            "label key and value greater than maximum size ({MAX_LABEL_BYTES} bytes), key: {}",
            &k[..k.len().min(64)]
        )));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("task failed: {e}")))?
        .map_err(Status::from)
}

#[tonic::async_trait]
impl Content for ContentService {
    async fn info(
        &self,
        request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let ns = self.namespace(&request)?;
        let digest = Digest::parse(&request.into_inner().digest)?;
        let info = self.store.stat(&ns, &digest)?;
        Ok(Response::new(pb::InfoResponse {
            info: Some(info_pb(&info)),
        }))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        let ns = self.namespace(&request)?;
        let r = request.into_inner();
        let info = r
            .info
            .ok_or_else(|| Status::invalid_argument("update needs info"))?;
        let digest = Digest::parse(&info.digest)?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        for (k, v) in &info.labels {
            check_label(k, v)?;
        }
        let mut ops: Vec<(String, Option<String>)> = Vec::new();
        let mut replace_all = paths.is_empty();
        for p in &paths {
            if p == "labels" {
                replace_all = true;
            } else if let Some(key) = p.strip_prefix("labels.") {
                ops.push((
                    key.to_string(),
                    info.labels.get(key).filter(|v| !v.is_empty()).cloned(),
                ));
            } else {
                return Err(Status::invalid_argument(format!(
                    "cannot update {p:?} field on content info {digest}"
                )));
            }
        }
        let store = self.store.clone();
        let labels = info.labels;
        let updated = blocking(move || {
            store.update_meta(&ns, &digest, |meta| {
                if replace_all {
                    meta.labels = labels.into_iter().filter(|(_, v)| !v.is_empty()).collect();
                }
                for (k, v) in ops {
                    match v {
                        Some(v) => meta.labels.insert(k, v),
                        None => meta.labels.remove(&k),
                    };
                }
                Ok(())
            })
        })
        .await?;
        Ok(Response::new(pb::UpdateResponse {
            info: Some(info_pb(&updated)),
        }))
    }

    type ListStream = Pin<Box<dyn Stream<Item = Result<pb::ListContentResponse, Status>> + Send>>;

    async fn list(
        &self,
        request: Request<pb::ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = self.namespace(&request)?;
        let filters = Filters::parse(&request.into_inner().filters)?;
        let store = self.store.clone();
        let blobs = blocking(move || store.list(&ns, &[])).await?;
        let infos: Vec<pb::Info> = blobs
            .iter()
            .map(info_pb)
            .filter(|i| {
                filters.matches(|path: &[String]| match path {
                    [f] if f == "digest" => Some(i.digest.as_str()),
                    [l, key @ ..] if l == "labels" && !key.is_empty() => {
                        i.labels.get(&key.join(".")).map(|s| s.as_str())
                    }
                    _ => None,
                })
            })
            .collect();
        let batches: Vec<Result<pb::ListContentResponse, Status>> = infos
            .chunks(LIST_BATCH)
            .map(|c| Ok(pb::ListContentResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteContentRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = self.namespace(&request)?;
        let digest = Digest::parse(&request.into_inner().digest)?;
        let store = self.store.clone();
        blocking(move || store.delete(&ns, &digest)).await?;
        Ok(Response::new(()))
    }

    type ReadStream = Pin<Box<dyn Stream<Item = Result<pb::ReadContentResponse, Status>> + Send>>;

    async fn read(
        &self,
        request: Request<pb::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ns = self.namespace(&request)?;
        let permit = self.gate.stream()?;
        let r = request.into_inner();
        let digest = Digest::parse(&r.digest)?;
        let info = self.store.stat(&ns, &digest)?;
        let size = info.content.size;
        let offset = r.offset.max(0) as u64;
        if offset > size {
            return Err(Status::out_of_range(format!(
                "read past object length {size} at offset {offset}"
            )));
        }
        let length = if r.size <= 0 { 0 } else { r.size as u64 };
        let end = if length == 0 {
            size
        } else {
            offset.saturating_add(length).min(size)
        };
        if end - offset <= SMALL_READ_BYTES {
            // containerd reads in 32 KiB windows, nearly all from cached blocks:
            // answer those here, without a hand-off to another thread.
            let mut data = Vec::with_capacity((end - offset) as usize);
            let whole = self.store.read_range_cached(
                &digest,
                &info.content,
                offset,
                end - offset,
                &mut |p| {
                    data.extend_from_slice(p);
                    Ok(true)
                },
            )?;
            if whole {
                let msgs = if data.is_empty() {
                    vec![]
                } else {
                    vec![Ok(pb::ReadContentResponse {
                        offset: offset as i64,
                        data: data.into(),
                    })]
                };
                return Ok(Response::new(Box::pin(tokio_stream::iter(msgs))));
            }
        }
        let rx = crate::server::stream::stream_range(
            self.store.clone(),
            digest,
            info.content,
            offset,
            length,
            false,
            permit,
            |pos, data| pb::ReadContentResponse {
                offset: pos as i64,
                data,
            },
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let ns = self.namespace(&request)?;
        let s = self.store.upload_status(&ns, &request.into_inner().r#ref)?;
        Ok(Response::new(pb::StatusResponse {
            status: Some(status_pb(&s)),
        }))
    }

    async fn list_statuses(
        &self,
        request: Request<pb::ListStatusesRequest>,
    ) -> Result<Response<pb::ListStatusesResponse>, Status> {
        let ns = self.namespace(&request)?;
        let filters = Filters::parse(&request.into_inner().filters)?;
        let statuses = self
            .store
            .list_uploads(&ns)?
            .iter()
            .filter(|s| {
                filters.matches(|p: &[String]| match p {
                    [f] if f == "ref" => Some(s.record.reference.as_str()),
                    _ => None,
                })
            })
            .map(status_pb)
            .collect();
        Ok(Response::new(pb::ListStatusesResponse { statuses }))
    }

    type WriteStream = Pin<Box<dyn Stream<Item = Result<pb::WriteContentResponse, Status>> + Send>>;

    async fn write(
        &self,
        request: Request<Streaming<pb::WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let ns = self.namespace(&request)?;
        let permit = self.gate.stream()?;
        let rx = write::spawn(
            self.store.clone(),
            ns,
            request.into_inner(),
            self.gate.clone(),
            permit,
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn abort(&self, request: Request<pb::AbortRequest>) -> Result<Response<()>, Status> {
        let ns = self.namespace(&request)?;
        let reference = request.into_inner().r#ref;
        let store = self.store.clone();
        blocking(move || store.abort_upload(&ns, &reference)).await?;
        Ok(Response::new(()))
    }
}
