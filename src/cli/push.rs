use super::{print_json, status_err};
use crate::client;
use crate::proto::strata::v1 as pb;
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Files to store; `-` reads standard input
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Namespace to record the blobs in
    #[arg(short, long, default_value = crate::config::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Media type to record with each blob
    #[arg(long, default_value = "")]
    pub media_type: String,
    /// Label to set, as KEY=VALUE (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Refuse the push (storing nothing) unless the content hashes to this digest
    #[arg(long, value_name = "DIGEST")]
    pub expected_digest: Option<String>,
    /// Store gzip and zstd blobs as received and let the daemon decode,
    /// deduplicate and prove them in the background (as containerd uploads):
    /// the push returns at disk speed, the space is saved minutes later
    #[arg(long)]
    pub defer: bool,
    /// Print a JSON array of results instead of lines
    #[arg(long)]
    pub json: bool,
}

/// Bytes per push message: 1 MiB less room for the message's framing, so
/// the daemon's receive buffer (grown by doubling) stops at 1 MiB, not 2.
const PIECE: usize = (1 << 20) - 64;

pub async fn run(args: PushArgs, target: &client::Target) -> anyhow::Result<()> {
    let mut labels = std::collections::HashMap::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("label {l:?} is not KEY=VALUE"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let mut client = client::connect_to(target).await?;
    let mut results = Vec::new();
    for file in &args.files {
        let start = pb::PushStart {
            namespace: args.namespace.clone(),
            expected_digest: args.expected_digest.clone().unwrap_or_default(),
            media_type: args.media_type.clone(),
            labels: labels.clone(),
            expected_size: 0,
            defer_conversion: args.defer,
        };
        let r = push_one(&mut client, file, start)
            .await
            .with_context(|| format!("pushing {}", file.display()))?;
        if args.json {
            results.push(serde_json::json!({
                "file": file.display().to_string(),
                "digest": r.digest, "size": r.size, "new_bytes": r.bytes_added,
                "plain_bytes": r.plain_bytes, "new_chunks": r.new_chunks,
                "reused_chunks": r.reused_chunks, "already_stored": r.already_stored,
                "kept": r.kept,
            }));
        } else if r.kept.is_empty() {
            println!("{}  {}  {}", r.digest, r.size, r.bytes_added);
        } else {
            // A compressed blob: how its exact bytes are kept, as a fourth column.
            println!("{}  {}  {}  {}", r.digest, r.size, r.bytes_added, r.kept);
        }
    }
    if args.json {
        print_json(&serde_json::Value::Array(results));
    }
    Ok(())
}

async fn push_one(
    client: &mut pb::store_client::StoreClient<tonic::transport::Channel>,
    file: &Path,
    start: pb::PushStart,
) -> anyhow::Result<pb::PushResponse> {
    let (reader, len): (Box<dyn Read + Send>, Option<u64>) = if file == Path::new("-") {
        (Box::new(std::io::stdin()), None)
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), len)
    };
    push_reader(client, reader, len, &file.display().to_string(), start).await
}

/// Pushes what `reader` gives (`len` bytes, when known: a shorter stream then
/// fails the push instead of storing a part), with a progress bar named `what`.
pub async fn push_reader(
    client: &mut pb::store_client::StoreClient<tonic::transport::Channel>,
    mut reader: Box<dyn Read + Send>,
    len: Option<u64>,
    what: &str,
    start: pb::PushStart,
) -> anyhow::Result<pb::PushResponse> {
    let bar = progress_bar(len, what);
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::PushRequest>(4);
    // A file that shrinks while it is read must fail the push, not store a part.
    let start = pb::PushStart {
        expected_size: len.unwrap_or(0),
        ..start
    };
    tx.send(pb::PushRequest {
        msg: Some(pb::push_request::Msg::Start(start)),
    })
    .await?;
    let bar2 = bar.clone();
    let reading = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        loop {
            let mut buf = vec![0u8; PIECE];
            let n = match read_full(&mut reader, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    // Ending the stream now would commit what was sent: send
                    // a second `start`, which the daemon refuses, storing nothing.
                    let _ = tx.blocking_send(pb::PushRequest {
                        msg: Some(pb::push_request::Msg::Start(Default::default())),
                    });
                    return Err(e.into());
                }
            };
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            bar2.inc(n as u64);
            let msg = pb::PushRequest {
                msg: Some(pb::push_request::Msg::Data(buf.into())),
            };
            if tx.blocking_send(msg).is_err() {
                return Ok(()); // the call ended early; its status says why
            }
        }
    });
    let resp = client
        .push(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let read_result = reading.await?;
    bar.finish_and_clear();
    // A failed read aborted the push (the daemon's refusal says only that):
    // the read error is the one to report.
    read_result?;
    let resp = resp.map_err(status_err)?.into_inner();
    Ok(resp)
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

pub(super) fn progress_bar(len: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .expect("template")
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{msg} {spinner} {bytes} {bytes_per_sec}")
                .expect("template"),
        ),
    };
    bar.set_message(what.to_string());
    bar
}
