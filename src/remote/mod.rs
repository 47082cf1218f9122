//! The client side of the OCI distribution API: `docker://` references for
//! `strata import`, `strata analyze` and `strata export`.
//!
//! - [`names`]: the spec's grammar of repository names and tags (the
//!   registry's routes check the same).
//! - [`reference`]: what users type (`docker://HOST/REPO:TAG`, Docker Hub
//!   short names, skopeo's `oci:` / `oci-archive:` / `docker-archive:`).
//! - [`credentials`] and [`challenge`]: who the client is (`--creds`, auth
//!   files; Basic, and the Bearer token flow).
//! - [`session`]: one registry over reqwest with rustls (system roots plus
//!   `--cert-dir`), timeouts on every request, retries with backoff.
//! - [`pull`]: manifests resolved to a platform as for files, blobs streamed
//!   straight into the store's ingest and checked as they arrive.
//! - [`push`]: HEAD, cross-repository mount, monolithic or chunked upload,
//!   then the manifest.
//!
//! reqwest rather than a registry crate (oci-client): the store's ingest
//! drives each blob's stream itself (resumed with `Range` where it breaks,
//! fed to a push with bounded memory), and the daemon's mirror already
//! speaks to upstreams through reqwest. The registry's pull-through mirror
//! asks its upstreams through [`Session`] too, with the same credentials.

pub mod challenge;
pub mod credentials;
pub mod names;
pub mod pull;
pub mod push;
pub mod reference;
pub mod session;

pub use credentials::Credentials;
pub use pull::{RegistrySource, Sessions};
pub use reference::{Location, Reference, Transport};
pub use session::{Options, Session};
