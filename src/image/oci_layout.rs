//! Reading an OCI image layout (a directory or the members of a tar): its
//! index.json, then manifests and nested indexes down to one manifest per
//! named image for the wanted platform.

use super::platform::{self, Platform};
use super::source::FileSource;
use super::spec::{self, AnyManifest, ConfigJson, Descriptor};
use super::{blob_ref, parse_json, read_json_blob, BlobRef, Image, ManifestSource, MAX_JSON};
use crate::error::{Error, Result};

/// Index nesting deeper than this is refused (real images nest once).
const MAX_DEPTH: usize = 8;

/// The images named by the layout's index.json. `default_name` names those
/// without a ref name.
pub(crate) fn read_layout(
    src: &FileSource,
    platform: &Platform,
    default_name: &str,
) -> Result<Vec<Image>> {
    let loc = src.backing.location().display().to_string();
    let file = format!("index.json in {loc}");
    let bytes = src
        .backing
        .read_small("index.json", MAX_JSON)
        .map_err(|e| Error::InvalidArgument(format!("{file}: {e}")))?;
    let index: AnyManifest = parse_json(&bytes, &file)?;
    let entries = index
        .manifests
        .ok_or_else(|| Error::InvalidArgument(format!("{file}: no \"manifests\" list")))?;

    // Entries sharing a ref name are one image's platforms; unnamed entries
    // are one image too, unless none has a platform (then each is an image).
    let mut groups: Vec<(Option<String>, Vec<Descriptor>)> = Vec::new();
    for d in entries.into_iter().filter(|d| !d.is_attestation()) {
        let name = d
            .annotations
            .get(spec::CONTAINERD_NAME)
            .or_else(|| d.annotations.get(spec::REF_NAME))
            .cloned();
        match groups.iter_mut().find(|(n, _)| n.is_some() && *n == name) {
            Some((_, g)) => g.push(d),
            None => groups.push((name, vec![d])),
        }
    }
    let unnamed: Vec<Descriptor> = extract_unnamed(&mut groups);
    if unnamed.iter().any(|d| d.platform.is_some()) {
        groups.push((None, unnamed));
    } else {
        groups.extend(unnamed.into_iter().map(|d| (None, vec![d])));
    }
    let n_unnamed = groups.iter().filter(|(n, _)| n.is_none()).count();

    let r = Resolver { src, platform, loc };
    let mut images = Vec::new();
    let mut i = 0;
    for (name, descs) in groups {
        let name = name.unwrap_or_else(|| {
            i += 1;
            if n_unnamed == 1 {
                default_name.to_string()
            } else {
                format!("{default_name}-{i}")
            }
        });
        let mut seen = Vec::new();
        match r.pick(&name, &descs, 0, &mut seen)? {
            Some(img) => images.push(img),
            None => {
                return Err(Error::NotFound(format!(
                    "image {name} in {}: no manifest for platform {platform} (it has: {})",
                    r.loc,
                    if seen.is_empty() {
                        "none named".to_string()
                    } else {
                        seen.join(", ")
                    }
                )))
            }
        }
    }
    Ok(images)
}

fn extract_unnamed(groups: &mut Vec<(Option<String>, Vec<Descriptor>)>) -> Vec<Descriptor> {
    let mut out = Vec::new();
    groups.retain_mut(|(n, g)| {
        if n.is_none() {
            out.append(g);
            false
        } else {
            true
        }
    });
    out
}

/// The images a manifest or index `root` names, read from `src` (`loc` names
/// it in errors): the one for `platform`, or with `all`, one per platform
/// (each named `<name>#<os/arch[/variant]>` when there are several).
pub(crate) fn resolve_root(
    src: &dyn ManifestSource,
    root: &Descriptor,
    name: &str,
    platform: &Platform,
    all: bool,
    loc: &str,
) -> Result<Vec<Image>> {
    let r = Resolver {
        src,
        platform,
        loc: loc.to_string(),
    };
    let mut seen = Vec::new();
    if all {
        let mut out = Vec::new();
        r.collect(name, root, 0, &mut out)?;
        if out.len() > 1 {
            for img in &mut out {
                img.name = format!("{name}#{}", img.platform.as_deref().unwrap_or("unknown"));
            }
        }
        return Ok(out);
    }
    match r.resolve(name, root, 0, &mut seen)? {
        Some(img) => Ok(vec![img]),
        None => Err(Error::NotFound(format!(
            "image {name} in {loc}: no manifest for platform {platform} (it has: {}; --all-platforms takes every one)",
            if seen.is_empty() {
                "none named".to_string()
            } else {
                seen.join(", ")
            }
        ))),
    }
}

struct Resolver<'a> {
    src: &'a dyn ManifestSource,
    platform: &'a Platform,
    loc: String,
}

/// A manifest or index read and parsed.
struct Loaded {
    blob: BlobRef,
    doc: AnyManifest,
    media_type: String,
    is_index: bool,
    file: String,
}

impl Resolver<'_> {
    /// Every image `d` leads to: itself, or each entry of an index.
    fn collect(
        &self,
        name: &str,
        d: &Descriptor,
        depth: usize,
        out: &mut Vec<Image>,
    ) -> Result<()> {
        let l = self.load(name, d, depth)?;
        if l.is_index {
            for e in l
                .doc
                .manifests
                .iter()
                .flatten()
                .filter(|e| !e.is_attestation())
            {
                self.collect(name, e, depth + 1, out)?;
            }
            return Ok(());
        }
        out.push(self.image(name, d, l)?);
        Ok(())
    }

    /// The image for the wanted platform among `descs` (an index's entries),
    /// or None if none fits; `seen` collects the platforms on offer.
    fn pick(
        &self,
        name: &str,
        descs: &[Descriptor],
        depth: usize,
        seen: &mut Vec<String>,
    ) -> Result<Option<Image>> {
        let cands: Vec<&Descriptor> = descs.iter().filter(|d| !d.is_attestation()).collect();
        if let [only] = cands[..] {
            if only.platform.is_none() {
                return self.resolve(name, only, depth, seen);
            }
        }
        let mut best: Option<(u8, Image)> = None;
        for d in cands {
            let rank = match &d.platform {
                Some(p) => {
                    seen.push(platform::display(
                        &p.os,
                        &p.architecture,
                        p.variant.as_deref(),
                    ));
                    match self
                        .platform
                        .fit(&p.os, &p.architecture, p.variant.as_deref())
                    {
                        Some(r) if best.as_ref().is_none_or(|(b, _)| r > *b) => r,
                        _ => continue,
                    }
                }
                None => 0, // known only once resolved
            };
            let Some(img) = self.resolve(name, d, depth, seen)? else {
                continue;
            };
            let rank = if rank > 0 {
                rank
            } else {
                match img.platform.as_deref().map(Platform::parse) {
                    Some(Ok(p)) => {
                        seen.push(p.to_string());
                        match self.platform.fit(&p.os, &p.arch, p.variant.as_deref()) {
                            Some(r) => r,
                            None => continue,
                        }
                    }
                    _ => continue,
                }
            };
            if best.as_ref().is_none_or(|(b, _)| rank > *b) {
                best = Some((rank, img));
            }
            if rank == 2 {
                break;
            }
        }
        Ok(best.map(|(_, img)| img))
    }

    /// Reads the manifest or index `d` names, verified, and follows it.
    fn resolve(
        &self,
        name: &str,
        d: &Descriptor,
        depth: usize,
        seen: &mut Vec<String>,
    ) -> Result<Option<Image>> {
        let l = self.load(name, d, depth)?;
        if l.is_index {
            let entries = l.doc.manifests.unwrap_or_default();
            return self.pick(name, &entries, depth + 1, seen);
        }
        self.image(name, d, l).map(Some)
    }

    /// Reads and parses the manifest or index `d` names, verified.
    fn load(&self, name: &str, d: &Descriptor, depth: usize) -> Result<Loaded> {
        if depth > MAX_DEPTH {
            return Err(Error::InvalidArgument(format!(
                "image {name} in {}: indexes nested more than {MAX_DEPTH} deep",
                self.loc
            )));
        }
        let blob = blob_ref(d, name, "index entry")?;
        let bytes = read_json_blob(self.src as &dyn super::BlobSource, &blob, "manifest", name)?;
        let file = format!("manifest {} of image {name} in {}", blob.digest, self.loc);
        let doc: AnyManifest = parse_json(&bytes, &file)?;
        if doc.schema_version == Some(1) {
            return Err(Error::InvalidArgument(format!(
                "{file}: docker schema 1 manifests are not supported"
            )));
        }
        let media_type = [Some(d.media_type.as_str()), doc.media_type.as_deref()]
            .into_iter()
            .flatten()
            .find(|m| !m.is_empty())
            .unwrap_or("")
            .to_string();
        let is_index = match media_type.as_str() {
            spec::OCI_INDEX | spec::DOCKER_LIST => true,
            spec::OCI_MANIFEST | spec::DOCKER_MANIFEST => false,
            _ => doc.manifests.is_some() && doc.config.is_none(),
        };
        Ok(Loaded {
            blob,
            doc,
            media_type,
            is_index,
            file,
        })
    }

    /// The image a (single-platform) manifest describes.
    fn image(&self, name: &str, d: &Descriptor, l: Loaded) -> Result<Image> {
        let Loaded {
            blob,
            doc,
            media_type,
            file,
            ..
        } = l;
        let config = doc
            .config
            .ok_or_else(|| Error::InvalidArgument(format!("{file}: no config")))?;
        let config = blob_ref(&config, name, "config")?;
        let layers = doc
            .layers
            .unwrap_or_default()
            .iter()
            .map(|l| blob_ref(l, name, "layer"))
            .collect::<Result<Vec<_>>>()?;
        for l in &layers {
            if !self.src.has(&l.digest) {
                return Err(Error::NotFound(format!(
                    "image {name}: layer {} is missing from {}",
                    l.digest, self.loc
                )));
            }
        }
        let cfg_bytes =
            read_json_blob(self.src as &dyn super::BlobSource, &config, "config", name)?;
        let cfg: ConfigJson = parse_json(
            &cfg_bytes,
            &format!("config {} of image {name} in {}", config.digest, self.loc),
        )?;
        let platform = match &d.platform {
            Some(p) => Some(platform::display(
                &p.os,
                &p.architecture,
                p.variant.as_deref(),
            )),
            None => config_platform(&cfg),
        };
        Ok(Image {
            name: name.to_string(),
            manifest: Some(BlobRef {
                media_type: if media_type.is_empty() {
                    spec::OCI_MANIFEST.to_string()
                } else {
                    media_type
                },
                ..blob
            }),
            config: Some(config),
            layers,
            platform,
        })
    }
}

/// "os/arch[/variant]" from a config, when it names both.
pub(crate) fn config_platform(cfg: &ConfigJson) -> Option<String> {
    match (cfg.os.as_deref(), cfg.architecture.as_deref()) {
        (Some(os), Some(arch)) if !os.is_empty() && !arch.is_empty() => {
            Some(platform::display(os, arch, cfg.variant.as_deref()))
        }
        _ => None,
    }
}
