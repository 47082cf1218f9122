//! The `strata.v1` gRPC service over the store.

use crate::codec::plan::Strategy;
use crate::config::DEFAULT_NAMESPACE;
use crate::digest::Digest;
use crate::error::Error;
use crate::proto::strata::v1 as pb;
use crate::store::{BlobInfo, IngestOptions, Store};
use bytes::Bytes;
use pb::store_server::Store as StoreApi;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

pub struct StrataService {
    store: Store,
    gate: super::Gate,
}

impl StrataService {
    pub fn new(store: Store, gate: super::Gate) -> Self {
        StrataService { store, gate }
    }
}

fn ns_or_default(ns: String) -> String {
    if ns.is_empty() {
        DEFAULT_NAMESPACE.to_string()
    } else {
        ns
    }
}

pub fn blob_info_pb(b: &BlobInfo, kept: String) -> pb::BlobInfo {
    pb::BlobInfo {
        namespace: b.namespace.clone(),
        digest: b.digest.to_string(),
        size: b.content.size,
        media_type: b.meta.media_type.clone(),
        labels: b.meta.labels.clone().into_iter().collect(),
        created_at: b.meta.created_at,
        updated_at: b.meta.updated_at,
        chunks: b.content.chunk_refs,
        literal_bytes: b.content.literal_bytes,
        layout: b.content.layout_name().to_string(),
        codec: b.codec().to_string(),
        strategy: b.content.strategy().name().to_string(),
        kept,
        diff_id: b
            .content
            .wrap
            .as_ref()
            .and_then(|w| w.diff_id)
            .map(|d| Digest(d).to_string())
            .unwrap_or_default(),
        plain_size: b
            .content
            .wrap
            .as_ref()
            .map_or(b.content.size, |w| w.plain_size.unwrap_or(0)),
        extra_bytes: b.content.wrap.as_ref().map_or(0, |w| w.extra_bytes),
        shares_plain_of: b.content.base().map(|d| d.to_string()).unwrap_or_default(),
        variants: b.content.variants,
    }
}

/// What the async side hands the blocking ingest thread.
pub enum IngestMsg {
    Data(Bytes),
    /// The client finished sending: commit.
    End,
}

/// Feeds an ingest from a channel on a blocking thread. The ingest commits on
/// `End`; if the channel closes first (client gone), it is dropped, which
/// leaves nothing behind.
pub fn run_ingest(
    store: &Store,
    opts: IngestOptions,
    mut rx: mpsc::Receiver<IngestMsg>,
) -> Result<crate::store::PushOutcome, Error> {
    let mut ingest = store.begin_ingest(opts)?;
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            IngestMsg::Data(b) => ingest.write_bytes(b)?,
            IngestMsg::End => return ingest.commit(),
        }
    }
    Err(Error::Cancelled(
        "the client went away before finishing the push; nothing was stored".into(),
    ))
}

#[tonic::async_trait]
impl StoreApi for StrataService {
    async fn push(
        &self,
        request: Request<Streaming<pb::PushRequest>>,
    ) -> Result<Response<pb::PushResponse>, Status> {
        let _permit = self.gate.stream()?;
        let mut stream = request.into_inner();
        let start = match self.gate.next(stream.message()).await?? {
            Some(pb::PushRequest {
                msg: Some(pb::push_request::Msg::Start(s)),
            }) => s,
            Some(_) => {
                return Err(Status::invalid_argument(
                    "the first push message must carry `start`, not data",
                ))
            }
            None => {
                return Err(Status::invalid_argument(
                    "empty push: the first message must carry `start`",
                ))
            }
        };
        let expected_digest = match start.expected_digest.as_str() {
            "" => None,
            s => Some(Digest::parse(s)?),
        };
        let opts = IngestOptions {
            namespace: ns_or_default(start.namespace),
            expected_digest,
            expected_size: (start.expected_size != 0).then_some(start.expected_size),
            media_type: start.media_type,
            labels: start.labels.into_iter().collect(),
            defer_compressed: start.defer_conversion,
            ..Default::default()
        };
        crate::store::validate_namespace(&opts.namespace)?;
        if let Some(n) = opts.expected_size {
            self.gate.check_size(n)?;
        }
        let gate = self.gate.clone();
        let (tx, rx) = mpsc::channel(8);
        let store = self.store.clone();
        let worker = tokio::task::spawn_blocking(move || run_ingest(&store, opts, rx));
        let feed = async {
            let mut received = 0u64;
            loop {
                match gate.next(stream.message()).await?? {
                    Some(pb::PushRequest {
                        msg: Some(pb::push_request::Msg::Data(d)),
                    }) => {
                        received += d.len() as u64;
                        // Dropping the sender abandons the ingest: nothing is stored.
                        gate.check_size(received)?;
                        if tx.send(IngestMsg::Data(d)).await.is_err() {
                            return Ok(()); // the ingest failed; its error is the answer
                        }
                    }
                    Some(_) => {
                        return Err(Status::invalid_argument(
                            "`start` may only be sent once, first",
                        ))
                    }
                    None => {
                        let _ = tx.send(IngestMsg::End).await;
                        return Ok(());
                    }
                }
            }
        };
        let fed: Result<(), Status> = feed.await;
        if let Err(status) = fed {
            drop(tx);
            let _ = worker.await;
            return Err(status);
        }
        drop(tx);
        let outcome = worker
            .await
            .map_err(|e| Status::internal(format!("ingest task failed: {e}")))??;
        self.gate.metrics.committed(outcome.size, &outcome);
        Ok(Response::new(pb::PushResponse {
            digest: outcome.digest.map(|d| d.to_string()).unwrap_or_default(),
            size: outcome.size,
            bytes_received: outcome.size,
            plain_bytes: outcome.plain_bytes,
            new_chunks: outcome.new_chunks,
            reused_chunks: outcome.reused_chunks,
            bytes_added: outcome.bytes_added,
            already_stored: outcome.already_stored,
            kept: outcome.kept,
        }))
    }

    type ReadStream = Pin<Box<dyn Stream<Item = Result<pb::ReadResponse, Status>> + Send>>;

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let r = request.into_inner();
        let digest = Digest::parse(&r.digest)?;
        let ns = ns_or_default(r.namespace);
        let info = self.store.stat(&ns, &digest)?;
        let size = match (&info.content.wrap, r.plain) {
            (Some(w), true) => w.plain_size.ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "{digest} does not decode to its end (corrupt, truncated or a decompression bomb), so it has no plain form"
                ))
            })?,
            _ => info.content.size,
        };
        if r.offset > size {
            return Err(Error::OutOfRange(format!(
                "offset {} is past the end of {digest} ({size} bytes)",
                r.offset
            ))
            .into());
        }
        let permit = self.gate.stream()?;
        let rx = super::stream::stream_range(
            self.store.clone(),
            digest,
            info.content,
            r.offset,
            r.length,
            r.plain,
            permit,
            |_, data| pb::ReadResponse { data },
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn stat(
        &self,
        request: Request<pb::StatRequest>,
    ) -> Result<Response<pb::BlobInfo>, Status> {
        let r = request.into_inner();
        let digest = Digest::parse(&r.digest)?;
        let info = self.store.stat(&ns_or_default(r.namespace), &digest)?;
        let kept = self.store.kept(&digest, &info.content)?;
        Ok(Response::new(blob_info_pb(&info, kept)))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let r = request.into_inner();
        let store = self.store.clone();
        let blobs = tokio::task::spawn_blocking(move || {
            store.list(&ns_or_default(r.namespace), &r.label_filters)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(pb::ListResponse {
            blobs: blobs
                .iter()
                .map(|b| Ok(blob_info_pb(b, self.store.kept(&b.digest, &b.content)?)))
                .collect::<Result<_, Error>>()?,
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = request.into_inner();
        let digest = Digest::parse(&r.digest)?;
        let store = self.store.clone();
        let released =
            tokio::task::spawn_blocking(move || store.delete(&ns_or_default(r.namespace), &digest))
                .await
                .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(pb::DeleteResponse {
            content_released: released,
        }))
    }

    async fn stats(
        &self,
        _request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let store = self.store.clone();
        let s = tokio::task::spawn_blocking(move || store.stats())
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        let c = s.counters;
        Ok(Response::new(pb::StatsResponse {
            blobs: c.blobs,
            logical_bytes: c.logical_bytes,
            unique_plain_bytes: s.unique_plain_bytes(),
            bytes_on_disk: s.bytes_on_disk,
            chunks: c.chunks,
            dedup_ratio: s.dedup_ratio(),
            compression_ratio: s.compression_ratio(),
            contents: c.contents,
            pack_bytes: s.pack_file_bytes,
            index_bytes: s.index_bytes,
            chunk_plain_bytes: c.chunk_plain_bytes,
            literal_bytes: c.literal_bytes,
            unreferenced_chunks: c.unreferenced_chunks,
            rebuild_bytes: c.rebuild_bytes,
            logical_stream_bytes: c.logical_stream_bytes,
            pending_conversions: s.pending_conversions,
            store: s.bucket.as_ref().map(|b| b.url.clone()).unwrap_or_default(),
            bucket_objects: s.bucket.as_ref().map_or(0, |b| b.objects),
            bucket_bytes: s.bucket.as_ref().map_or(0, |b| b.bytes),
            bucket_pack_bytes: s.bucket.as_ref().map_or(0, |b| b.pack_bytes),
            cache_bytes: s.bucket.as_ref().map_or(0, |b| b.cache_bytes),
            contents_by_strategy: Strategy::ALL
                .iter()
                .map(|s| (s.name().to_string(), c.by_strategy[*s as usize]))
                .collect(),
        }))
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let deep = request.into_inner().deep;
        let store = self.store.clone();
        let r = tokio::task::spawn_blocking(move || store.verify(deep))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(verify_pb(&r)))
    }

    async fn gc(
        &self,
        request: Request<pb::GcRequest>,
    ) -> Result<Response<pb::GcResponse>, Status> {
        let store = self.store.clone();
        let opts = crate::store::gc::GcOptions {
            densify: !request.get_ref().skip_densify,
            ..Default::default()
        };
        let r = tokio::task::spawn_blocking(move || store.gc(opts))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        self.gate.metrics.collected(&r);
        Ok(Response::new(gc_pb(&r)))
    }
}

pub fn gc_pb(r: &crate::store::gc::GcReport) -> pb::GcResponse {
    pb::GcResponse {
        chunks_freed: r.chunks_freed,
        chunk_bytes_freed: r.chunk_bytes_freed,
        packs_rewritten: r.packs_rewritten,
        packs_removed: r.packs_removed,
        chunks_moved: r.chunks_moved,
        pack_bytes_before: r.pack_bytes_before,
        pack_bytes_after: r.pack_bytes_after,
        packs_densified: r.packs_densified,
        densified_bytes_before: r.densified_bytes_before,
        densified_bytes_after: r.densified_bytes_after,
        bucket_collected: r.bucket.ran,
        bucket_marked: r.bucket.marked,
        bucket_deleted: r.bucket.deleted,
        bucket_bytes_deleted: r.bucket.bytes_deleted,
        bucket_pieces_compacted: r.bucket.compacted.pieces,
        bucket_pieces_written: r.bucket.compacted.pieces_written,
        bucket_segments_compacted: r.bucket.compacted.segments,
        bucket_segments_written: r.bucket.compacted.segments_written,
        bucket_spare_contents: r.bucket.spare_contents,
    }
}

pub fn verify_pb(r: &crate::store::verify::VerifyReport) -> pb::VerifyResponse {
    pb::VerifyResponse {
        ok: r.ok(),
        problems: r
            .problems
            .iter()
            .map(|p| pb::Problem {
                kind: p.kind.clone(),
                detail: p.detail.clone(),
                blobs: p.blobs.clone(),
            })
            .collect(),
        packs: r.packs,
        records: r.records,
        pack_bytes: r.pack_bytes,
        chunks: r.chunks,
        contents: r.contents,
        blobs: r.blobs,
        deep_checked: r.deep_checked,
        relocated: r.relocated,
    }
}
