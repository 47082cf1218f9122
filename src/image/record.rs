//! How the daemon holds a whole image: its blobs as ordinary blobs of a
//! namespace, plus one small JSON *record* blob naming them, labelled with
//! the image's name. Records are content-addressed like any blob, so
//! importing the same image twice stores nothing new, and listing images is
//! a label-filtered List; no index format of its own to keep consistent.

use super::{BlobRef, Image};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Media type of a record blob.
pub const MEDIA_TYPE: &str = "application/vnd.strata.image.v1+json";
/// Label carrying the image's name on its record blob.
pub const NAME_LABEL: &str = "strata.image.name";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Desc {
    digest: String,
    size: u64,
    #[serde(rename = "mediaType", default)]
    media_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    schema: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    manifest: Option<Desc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<Desc>,
    layers: Vec<Desc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<String>,
}

const SCHEMA: &str = "strata.image.v1";

fn desc(b: &BlobRef) -> Desc {
    Desc {
        digest: b.digest.clone(),
        size: b.size,
        media_type: b.media_type.clone(),
    }
}

fn blob(d: Desc) -> BlobRef {
    BlobRef {
        digest: d.digest,
        size: d.size,
        media_type: d.media_type,
    }
}

/// The record's bytes: the same image gives the same bytes.
pub fn encode(img: &Image) -> Vec<u8> {
    let r = Record {
        schema: SCHEMA.into(),
        name: img.name.clone(),
        manifest: img.manifest.as_ref().map(desc),
        config: img.config.as_ref().map(desc),
        layers: img.layers.iter().map(desc).collect(),
        platform: img.platform.clone(),
    };
    serde_json::to_vec(&r).expect("a record serializes")
}

pub fn decode(b: &[u8]) -> Result<Image> {
    let r: Record = serde_json::from_slice(b)
        .map_err(|e| Error::DataLoss(format!("an image record does not parse: {e}")))?;
    if r.schema != SCHEMA {
        return Err(Error::DataLoss(format!(
            "image record of unknown schema {:?}",
            r.schema
        )));
    }
    Ok(Image {
        name: r.name,
        manifest: r.manifest.map(blob),
        config: r.config.map(blob),
        layers: r.layers.into_iter().map(blob).collect(),
        platform: r.platform,
    })
}

/// Every blob of the image, manifest and config first, each once.
pub fn blobs(img: &Image) -> Vec<BlobRef> {
    let mut out: Vec<BlobRef> = Vec::new();
    for b in img
        .manifest
        .iter()
        .chain(img.config.iter())
        .chain(&img.layers)
    {
        if !out.iter().any(|o| o.digest == b.digest) {
            out.push(b.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(d: char, size: u64) -> BlobRef {
        BlobRef {
            digest: format!("sha256:{}", d.to_string().repeat(64)),
            size,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        }
    }

    #[test]
    fn records_round_trip_and_are_stable() {
        let img = Image {
            name: "debian:<12> & \"x\"".into(),
            manifest: Some(b('a', 300)),
            config: Some(b('b', 200)),
            layers: vec![b('c', 10), b('d', 20), b('c', 10)],
            platform: Some("linux/amd64".into()),
        };
        let enc = encode(&img);
        assert_eq!(decode(&enc).unwrap(), img);
        assert_eq!(encode(&img), enc);
        assert_eq!(blobs(&img).len(), 4);
        let lone = Image {
            manifest: None,
            config: None,
            ..img
        };
        assert_eq!(decode(&encode(&lone)).unwrap(), lone);
        assert!(decode(b"{\"schema\":\"other\",\"name\":\"x\",\"layers\":[]}").is_err());
        assert!(decode(b"not json").is_err());
    }
}
