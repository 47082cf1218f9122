//! `strata analyze IMAGE...`: how much of a set of images is really unique and
//! what a shared strata store would keep of it, found without a daemon (from
//! files), or for images a daemon holds (`--socket`/`--addr`).

use super::remote_args::RemoteArgs;
use crate::analyze::{self, Input, Settings};
use crate::client::{self, blob_source::DaemonSource};
use crate::image;
use crate::remote::{self, Location};
use crate::split::ChunkSizes;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
#[command(
    long_about = "Reads images from registries (docker:// references, each distinct blob fetched once \
and never stored) or files (OCI layouts, OCI archives, docker-archives, lone layer files), splits and hashes every distinct blob exactly as the daemon would (nothing is stored: chunk \
hashes are kept in memory only), and reports per image its compressed and plain size and the bytes \
unique to it or shared with the others; for the set, what deduplicating by layer, by file and by \
chunk leaves, and the bytes a strata store would keep (compressed chunks, recipes, rebuild data, \
index); and the bytes each image shares with each other one.\n\n\
With --socket or --addr on the command line, IMAGE names images the daemon holds (as `strata images` \
lists them; none: every image of --namespace), read back from it."
)]
pub struct AnalyzeArgs {
    /// Image inputs: registry references (`docker://HOST/REPO:TAG`), OCI
    /// layout directories (`oci:DIR[:REF]`), OCI archives, docker-archives
    /// (`docker save`), or single layer files (tar, tar.gz, tar.zst). Every
    /// image an input holds is analyzed.
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,
    /// With a daemon: the namespace whose images are analyzed
    #[arg(short, long, default_value = crate::config::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Platform to pick from multi-platform images (os/arch[/variant]) [default: the host's]
    #[arg(long)]
    pub platform: Option<String>,
    /// Chunk size settings MIN/AVG/MAX to compare, comma-separated
    /// (e.g. 16K/64K/256K,32K/128K/512K); the first gives the per-image
    /// figures and the matrix
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "16K/64K/256K",
        value_name = "MIN/AVG/MAX,..."
    )]
    pub chunk_sizes: Vec<String>,
    /// Print the report as JSON
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print the report as CSV: one row per image (with its row of the sharing
    /// matrix), an empty line, then one row per chunk-size setting
    #[arg(long)]
    pub csv: bool,
    /// Also write the report as one self-contained HTML page to FILE
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Block size of the store to predict (as `strata serve --block-kib`)
    #[arg(long, default_value_t = 2048, value_name = "KIB")]
    pub block_kib: usize,
    /// zstd level of the store to predict (as `strata serve --zstd-level`)
    #[arg(long, default_value_t = 3)]
    pub zstd_level: i32,
    /// Predict a store started with --no-preflate (gzip layers no replay fits
    /// are kept as received)
    #[arg(long)]
    pub no_preflate: bool,
    /// Re-encode every compressed layer whole, in step with its decode, as the
    /// daemon does before it lets a layer's bytes go. By default a replay that
    /// matches a layer's first 256 KiB is trusted for the rest, so gzip layers
    /// are analyzed at decoding speed; a producer that changes settings part
    /// way through a stream then shows here as replayed, at a few bytes, where
    /// the daemon would keep more
    #[arg(long)]
    pub prove: bool,
    /// Blobs analyzed at once [default: the number of cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Every platform of docker:// multi-platform images
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Images a daemon holds, read back through it.
fn daemon_inputs(
    a: &AnalyzeArgs,
    target: &client::Target,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Vec<Input>> {
    rt.block_on(async {
        let mut c = client::connect_to(target).await?;
        let held = super::images::held(&mut c, &a.namespace).await?;
        let wanted: Vec<String> = a.images.clone();
        for w in &wanted {
            if !held.iter().any(|i| &i.name == w) {
                anyhow::bail!(
                    "the daemon holds no image named {w:?} in namespace {:?} (see `strata images`; to analyze files, do not pass --socket or --addr)",
                    a.namespace
                );
            }
        }
        if held.is_empty() {
            anyhow::bail!("the daemon holds no images in namespace {:?} (`strata import` stores some)", a.namespace);
        }
        let source: Arc<dyn image::BlobSource> =
            Arc::new(DaemonSource::new(c, a.namespace.clone(), rt.handle().clone()));
        let origin = format!("daemon, namespace {}", a.namespace);
        Ok(held
            .into_iter()
            .filter(|i| wanted.is_empty() || wanted.contains(&i.name))
            .map(|image| Input {
                image,
                source: source.clone(),
                origin: origin.clone(),
            })
            .collect())
    })
}

pub fn run(a: AnalyzeArgs, daemon: Option<client::Target>) -> anyhow::Result<()> {
    if daemon.is_none() && a.images.is_empty() {
        anyhow::bail!("name at least one IMAGE (files), or pass --socket/--addr to analyze what a daemon holds");
    }
    let platform = super::images::platform(&a.platform)?;
    let chunk_sizes = a
        .chunk_sizes
        .iter()
        .map(|s| ChunkSizes::parse(s.trim()).map_err(|e| anyhow::anyhow!("--chunk-sizes: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if a.block_kib == 0 || a.block_kib > 32 * 1024 {
        anyhow::bail!("--block-kib {}: must be 1..=32768", a.block_kib);
    }
    // Readers of a daemon's blobs run their streams here.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut inputs = Vec::new();
    // What tells apart images named alike in different inputs.
    let mut input_names = Vec::new();
    if let Some(t) = &daemon {
        inputs = daemon_inputs(&a, t, &rt)?;
    }
    let sessions = remote::Sessions::default();
    for input in a.images.iter().filter(|_| daemon.is_none()) {
        let (opened, label) = match Location::parse(input)? {
            Location::Registry(r) => {
                let opts = a.remote.options()?;
                let (o, _) = rt
                    .block_on(remote::pull::open(
                        &r,
                        &platform,
                        a.all_platforms,
                        &opts,
                        &sessions,
                    ))
                    .with_context(|| format!("docker://{r}"))?;
                (o, r.to_string())
            }
            Location::Path { path, name, .. } => {
                if a.all_platforms {
                    anyhow::bail!("--all-platforms reads docker:// references; for {} pick one with --platform", path.display());
                }
                let mut o = image::open(&path, &platform)
                    .with_context(|| format!("reading {}", path.display()))?;
                if let Some(n) = name {
                    o.images.retain(|i| i.name == n);
                    if o.images.is_empty() {
                        anyhow::bail!("{} holds no image named {n:?}", path.display());
                    }
                }
                (o, image::default_name(&path))
            }
        };
        for img in opened.images {
            inputs.push(Input {
                image: img,
                source: opened.source.clone(),
                origin: input.clone(),
            });
            input_names.push(label.clone());
        }
    }
    // Images named alike in different inputs (each layout's "latest") are
    // told apart by their input's name.
    let mut count = std::collections::HashMap::new();
    for i in &inputs {
        *count.entry(i.image.name.clone()).or_insert(0) += 1;
    }
    for (i, label) in inputs.iter_mut().zip(input_names.iter()) {
        if count[&i.image.name] > 1 {
            i.image.name = format!("{label}:{}", i.image.name);
        }
    }
    let mut settings = Settings {
        source: if daemon.is_some() {
            "daemon"
        } else if a.images.iter().all(|i| i.starts_with("docker://")) {
            "registry"
        } else if a.images.iter().any(|i| i.starts_with("docker://")) {
            "files and registry"
        } else {
            "files"
        }
        .into(),
        chunk_sizes,
        block_bytes: a.block_kib * 1024,
        zstd_level: a.zstd_level,
        progress: true,
        ..Settings::default()
    };
    settings.unwrap.preflate = !a.no_preflate;
    settings.unwrap.trust_probe = !a.prove;
    if let Some(t) = a.threads {
        settings.threads = t.max(1);
    }
    let report = analyze::run(inputs, &settings)?;
    if let Some(f) = &a.html {
        std::fs::write(f, analyze::html::render(&report))
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if a.csv {
        print!("{}", analyze::csv::render(&report));
    } else {
        print!("{}", analyze::table::render(&report));
    }
    Ok(())
}
