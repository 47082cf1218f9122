use super::status_err;
use crate::client;
use crate::proto::strata::v1 as pb;
use crate::server::strata_api::verify_pb;
use crate::store::{Store, StoreConfig};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Also rebuild every blob and check its digest (reads everything)
    #[arg(long)]
    pub deep: bool,
    /// Check a store directly, without a daemon (it must not be running)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn offline(a: VerifyArgs) -> anyhow::Result<()> {
    let dir = a.data_dir.clone().expect("offline verify has a data dir");
    let store = Store::open(&dir, StoreConfig::default())?;
    let report = store.verify(a.deep)?;
    finish(&a, verify_pb(&report))
}

pub async fn online(a: VerifyArgs, target: &client::Target) -> anyhow::Result<()> {
    let mut c = client::connect_to(target).await?;
    let r = c
        .verify(pb::VerifyRequest { deep: a.deep })
        .await
        .map_err(status_err)?
        .into_inner();
    finish(&a, r)
}

fn finish(a: &VerifyArgs, r: pb::VerifyResponse) -> anyhow::Result<()> {
    if a.json {
        let problems: Vec<_> = r
            .problems
            .iter()
            .map(|p| serde_json::json!({"kind": p.kind, "detail": p.detail, "blobs": p.blobs}))
            .collect();
        super::print_json(&serde_json::json!({
            "ok": r.ok, "packs": r.packs, "records": r.records, "pack_bytes": r.pack_bytes,
            "chunks": r.chunks, "contents": r.contents, "blobs": r.blobs,
            "deep_checked": r.deep_checked, "relocated": r.relocated, "problems": problems,
        }));
    } else {
        println!(
            "checked {} packs ({} records, {} bytes), {} chunks, {} contents, {} blobs{}",
            r.packs,
            r.records,
            r.pack_bytes,
            r.chunks,
            r.contents,
            r.blobs,
            if a.deep {
                format!(", {} rebuilt", r.deep_checked)
            } else {
                String::new()
            }
        );
        if r.relocated > 0 {
            println!(
                "{} chunks were in bucket pieces a collection deleted: found again through the blobs' content objects (index repaired)",
                r.relocated
            );
        }
        for p in &r.problems {
            println!("FAULT {}: {}", p.kind, p.detail);
            for b in &p.blobs {
                println!("      affects {b}");
            }
        }
        println!("{}", if r.ok { "ok" } else { "FAULTY" });
    }
    if !r.ok {
        std::process::exit(1);
    }
    Ok(())
}
