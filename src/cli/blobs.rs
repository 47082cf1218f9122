use super::{print_json, status_err};
use crate::client;
use crate::proto::strata::v1 as pb;
use clap::Args;
use std::io::Write;

#[derive(Args, Debug)]
pub struct CatArgs {
    pub digest: String,
    #[arg(short, long, default_value = crate::config::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// First byte to write
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// Bytes to write (0: to the end)
    #[arg(long, default_value_t = 0)]
    pub length: u64,
    /// Write the plain stream: the tar inside a gzip or zstd blob (offset and
    /// length then count plain bytes)
    #[arg(long)]
    pub plain: bool,
}

#[derive(Args, Debug)]
pub struct StatArgs {
    pub digest: String,
    #[arg(short, long, default_value = crate::config::DEFAULT_NAMESPACE)]
    pub namespace: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[arg(short, long, default_value = crate::config::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Only blobs with this label (KEY) or label value (KEY=VALUE); repeatable, all must match
    #[arg(long = "label", value_name = "FILTER")]
    pub labels: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    #[arg(required = true)]
    pub digests: Vec<String>,
    #[arg(short, long, default_value = crate::config::DEFAULT_NAMESPACE)]
    pub namespace: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[arg(long)]
    pub json: bool,
}

pub async fn cat(a: CatArgs, target: &client::Target) -> anyhow::Result<()> {
    let mut c = client::connect_to(target).await?;
    let req = pb::ReadRequest {
        namespace: a.namespace,
        digest: a.digest,
        offset: a.offset,
        length: a.length,
        plain: a.plain,
    };
    let mut stream = c.read(req).await.map_err(status_err)?.into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(msg) = stream.message().await.map_err(status_err)? {
        if let Err(e) = out.write_all(&msg.data) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
    }
    out.flush()?;
    Ok(())
}

fn info_json(b: &pb::BlobInfo) -> serde_json::Value {
    serde_json::json!({
        "namespace": b.namespace, "digest": b.digest, "size": b.size, "media_type": b.media_type,
        "labels": b.labels, "created_at": b.created_at, "updated_at": b.updated_at,
        "chunks": b.chunks, "literal_bytes": b.literal_bytes, "layout": b.layout,
        "codec": b.codec, "strategy": b.strategy, "kept": b.kept, "diff_id": b.diff_id,
        "plain_size": b.plain_size, "extra_bytes": b.extra_bytes,
        "shares_plain_of": b.shares_plain_of, "variants": b.variants,
    })
}

pub async fn stat(a: StatArgs, target: &client::Target) -> anyhow::Result<()> {
    let mut c = client::connect_to(target).await?;
    let b = c
        .stat(pb::StatRequest {
            namespace: a.namespace,
            digest: a.digest,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    if a.json {
        print_json(&info_json(&b));
    } else {
        println!("digest:        {}", b.digest);
        println!("namespace:     {}", b.namespace);
        println!("size:          {}", b.size);
        println!("media type:    {}", b.media_type);
        println!("layout:        {}", b.layout);
        println!("chunks:        {}", b.chunks);
        println!("literal bytes: {}", b.literal_bytes);
        if !b.codec.is_empty() {
            println!("codec:         {}", b.codec);
            println!("strategy:      {} ({})", b.strategy, b.kept);
            println!(
                "diff_id:       {}",
                if b.diff_id.is_empty() {
                    "-"
                } else {
                    &b.diff_id
                }
            );
            println!("plain size:    {}", b.plain_size);
            println!("extra bytes:   {}", b.extra_bytes);
            if !b.shares_plain_of.is_empty() {
                println!(
                    "plain tar:     shared, stored once as {}",
                    b.shares_plain_of
                );
            }
        }
        if b.variants > 0 {
            println!(
                "shared with:   {} compressed blob(s) of this tar",
                b.variants
            );
        }
        let mut labels: Vec<_> = b.labels.iter().collect();
        labels.sort();
        for (k, v) in labels {
            println!("label:         {k}={v}");
        }
    }
    Ok(())
}

pub async fn ls(a: LsArgs, target: &client::Target) -> anyhow::Result<()> {
    let mut c = client::connect_to(target).await?;
    let req = pb::ListRequest {
        namespace: a.namespace,
        label_filters: a.labels,
    };
    let blobs = c.list(req).await.map_err(status_err)?.into_inner().blobs;
    if a.json {
        print_json(&serde_json::Value::Array(
            blobs.iter().map(info_json).collect(),
        ));
    } else {
        for b in &blobs {
            println!(
                "{}  {}  {}",
                b.digest,
                b.size,
                if b.media_type.is_empty() {
                    "-"
                } else {
                    &b.media_type
                }
            );
        }
    }
    Ok(())
}

pub async fn rm(a: RmArgs, target: &client::Target) -> anyhow::Result<()> {
    let mut c = client::connect_to(target).await?;
    let mut out = Vec::new();
    for d in &a.digests {
        let r = c
            .delete(pb::DeleteRequest {
                namespace: a.namespace.clone(),
                digest: d.clone(),
            })
            .await
            .map_err(status_err)?
            .into_inner();
        if a.json {
            out.push(serde_json::json!({"digest": d, "content_released": r.content_released}));
        } else {
            println!(
                "{d}  removed{}",
                if r.content_released {
                    ""
                } else {
                    " (content still held by another namespace)"
                }
            );
        }
    }
    if a.json {
        print_json(&serde_json::Value::Array(out));
    }
    Ok(())
}

pub async fn stats(a: StatsArgs, target: &client::Target) -> anyhow::Result<()> {
    let mut c = client::connect_to(target).await?;
    let s = c
        .stats(pb::StatsRequest {})
        .await
        .map_err(status_err)?
        .into_inner();
    if a.json {
        print_json(&serde_json::json!({
            "blobs": s.blobs, "contents": s.contents, "logical_bytes": s.logical_bytes,
            "unique_plain_bytes": s.unique_plain_bytes, "chunk_plain_bytes": s.chunk_plain_bytes,
            "literal_bytes": s.literal_bytes, "bytes_on_disk": s.bytes_on_disk, "pack_bytes": s.pack_bytes,
            "index_bytes": s.index_bytes, "chunks": s.chunks, "unreferenced_chunks": s.unreferenced_chunks,
            "dedup_ratio": s.dedup_ratio, "compression_ratio": s.compression_ratio,
            "rebuild_bytes": s.rebuild_bytes, "contents_by_strategy": s.contents_by_strategy,
            "logical_stream_bytes": s.logical_stream_bytes,
            "pending_conversions": s.pending_conversions,
            "store": s.store, "bucket_objects": s.bucket_objects, "bucket_bytes": s.bucket_bytes,
            "bucket_pack_bytes": s.bucket_pack_bytes, "cache_bytes": s.cache_bytes,
        }));
    } else {
        println!(
            "blobs:               {} ({} distinct contents)",
            s.blobs, s.contents
        );
        println!(
            "logical bytes:       {} ({} as chunked streams: the tars inside compressed blobs)",
            s.logical_bytes, s.logical_stream_bytes
        );
        println!(
            "unique plain bytes:  {} (chunks {} + literals {})",
            s.unique_plain_bytes, s.chunk_plain_bytes, s.literal_bytes
        );
        println!(
            "bytes on disk:       {} (packs {} + index {})",
            s.bytes_on_disk, s.pack_bytes, s.index_bytes
        );
        println!(
            "chunks:              {} ({} unreferenced)",
            s.chunks, s.unreferenced_chunks
        );
        println!("dedup ratio:         {:.2}", s.dedup_ratio);
        println!("compression ratio:   {:.2}", s.compression_ratio);
        println!(
            "rebuild bytes:       {} (kept only to rebuild compressed blobs exactly)",
            s.rebuild_bytes
        );
        let by: Vec<String> = ["none", "replay", "preflate", "stored", "mixed"]
            .iter()
            .map(|k| {
                format!(
                    "{k} {}",
                    s.contents_by_strategy.get(*k).copied().unwrap_or(0)
                )
            })
            .collect();
        println!("contents by strategy: {}", by.join(", "));
        if s.pending_conversions > 0 {
            println!(
                "pending conversions: {} (stored as received; converted in the background)",
                s.pending_conversions
            );
        }
        if !s.store.is_empty() {
            println!(
                "bucket:              {} ({} objects, {} bytes: packs {}); read cache {} bytes",
                s.store, s.bucket_objects, s.bucket_bytes, s.bucket_pack_bytes, s.cache_bytes
            );
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct GcArgs {
    #[arg(long)]
    pub json: bool,
    /// Only collect: leave packs not yet dense as ingest wrote them (by
    /// default they are rewritten at the daemon's --dense-level)
    #[arg(long)]
    pub no_densify: bool,
}

pub async fn gc(a: GcArgs, target: &client::Target) -> anyhow::Result<()> {
    let mut c = client::connect_to(target).await?;
    let r = c
        .gc(pb::GcRequest {
            skip_densify: a.no_densify,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    if a.json {
        print_json(&serde_json::json!({
            "chunks_freed": r.chunks_freed, "chunk_bytes_freed": r.chunk_bytes_freed,
            "packs_rewritten": r.packs_rewritten, "packs_removed": r.packs_removed,
            "chunks_moved": r.chunks_moved, "pack_bytes_before": r.pack_bytes_before,
            "pack_bytes_after": r.pack_bytes_after,
            "packs_densified": r.packs_densified,
            "densified_bytes_before": r.densified_bytes_before,
            "densified_bytes_after": r.densified_bytes_after,
            "bucket_collected": r.bucket_collected, "bucket_marked": r.bucket_marked,
            "bucket_deleted": r.bucket_deleted, "bucket_bytes_deleted": r.bucket_bytes_deleted,
            "bucket_pieces_compacted": r.bucket_pieces_compacted,
            "bucket_pieces_written": r.bucket_pieces_written,
            "bucket_segments_compacted": r.bucket_segments_compacted,
            "bucket_segments_written": r.bucket_segments_written,
            "bucket_spare_contents": r.bucket_spare_contents,
        }));
    } else {
        println!(
            "chunks freed:     {} ({} plain bytes)",
            r.chunks_freed, r.chunk_bytes_freed
        );
        println!(
            "packs rewritten:  {} ({} chunks moved), {} removed",
            r.packs_rewritten, r.chunks_moved, r.packs_removed
        );
        if r.packs_densified > 0 {
            println!(
                "packs densified:  {} ({} -> {} bytes)",
                r.packs_densified, r.densified_bytes_before, r.densified_bytes_after
            );
        }
        println!(
            "pack bytes:       {} -> {} ({} freed)",
            r.pack_bytes_before,
            r.pack_bytes_after,
            r.pack_bytes_before.saturating_sub(r.pack_bytes_after)
        );
        if r.bucket_collected {
            println!(
                "bucket:           {} objects marked; {} deleted ({} bytes); {} spare content objects",
                r.bucket_marked, r.bucket_deleted, r.bucket_bytes_deleted, r.bucket_spare_contents
            );
            println!(
                "bucket compacted: {} small pieces into {}, {} segments into {}",
                r.bucket_pieces_compacted,
                r.bucket_pieces_written,
                r.bucket_segments_compacted,
                r.bucket_segments_written
            );
        }
    }
    Ok(())
}
