//! The flags every command that reads or writes `docker://` references
//! shares: who the client is and how it trusts the registry.

use crate::remote::{self, Credentials};
use clap::{ArgAction, Args};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct RemoteArgs {
    /// Credentials for docker:// registries. Without it: the first entry for
    /// the registry in $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
    /// ~/.config/containers/auth.json or ~/.docker/config.json (plain `auth`
    /// entries; credential helpers are not run), else anonymous
    #[arg(
        long,
        value_name = "USER:PASS",
        env = "STRATA_REGISTRY_CREDS",
        hide_env_values = true
    )]
    pub creds: Option<String>,
    /// Certificates for registries, in the containers `certs.d` layout:
    /// `*.crt` CAs to trust, `*.cert` + `*.key` a client certificate
    /// [default: /etc/containers/certs.d/HOST:PORT or /etc/docker/certs.d/HOST:PORT]
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Verify registries' TLS certificates. `--tls-verify=false` accepts any
    /// certificate and falls back to plain HTTP (with a warning on stderr)
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub tls_verify: bool,
    /// Seconds a registry request may take (for a blob: the longest stall)
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub registry_timeout: u64,
    /// Further attempts after a 429, a 5xx or a broken connection (with backoff)
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub registry_retries: u32,
}

impl RemoteArgs {
    pub fn options(&self) -> anyhow::Result<remote::Options> {
        Ok(remote::Options {
            creds: self.creds.as_deref().map(Credentials::parse).transpose()?,
            cert_dir: self.cert_dir.clone(),
            tls_verify: self.tls_verify,
            timeout: Duration::from_secs(self.registry_timeout.max(1)),
            retries: self.registry_retries,
        })
    }
}
