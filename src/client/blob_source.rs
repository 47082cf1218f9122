//! The daemon's blobs as an `image::BlobSource`: what `strata export` and
//! `strata analyze --socket` read images from. Readers are synchronous (the
//! image writers are), fed by a task streaming the Read RPC on the runtime,
//! and verified against the digest like any other source.

use crate::image::{BlobRef, BlobSource, StreamReader, VerifyingReader};
use crate::proto::strata::v1 as pb;
use bytes::Bytes;
use std::io::{self, Read};
use tonic::transport::Channel;

pub struct DaemonSource {
    client: pb::store_client::StoreClient<Channel>,
    namespace: String,
    rt: tokio::runtime::Handle,
}

impl DaemonSource {
    /// `rt` runs the Read streams; readers must be used off its threads.
    pub fn new(
        client: pb::store_client::StoreClient<Channel>,
        namespace: String,
        rt: tokio::runtime::Handle,
    ) -> Self {
        DaemonSource {
            client,
            namespace,
            rt,
        }
    }
}

fn status_io(s: tonic::Status) -> io::Error {
    let kind = match s.code() {
        tonic::Code::NotFound => io::ErrorKind::NotFound,
        tonic::Code::DataLoss => io::ErrorKind::InvalidData,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{} ({:?})", s.message(), s.code()))
}

impl BlobSource for DaemonSource {
    fn open(&self, blob: &BlobRef) -> io::Result<Box<dyn Read + Send>> {
        // A few pieces in flight: memory stays bounded whatever the blob's size.
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(8);
        let mut client = self.client.clone();
        let req = pb::ReadRequest {
            namespace: self.namespace.clone(),
            digest: blob.digest.clone(),
            ..Default::default()
        };
        self.rt.spawn(async move {
            let mut stream = match client.read(req).await {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    let _ = tx.send(Err(status_io(s))).await;
                    return;
                }
            };
            loop {
                let item = match stream.message().await {
                    Ok(Some(m)) => Ok(m.data),
                    Ok(None) => return,
                    Err(s) => Err(status_io(s)),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        let r = StreamReader::new(rx);
        Ok(Box::new(VerifyingReader::new(r, &blob.digest, blob.size)))
    }
}
