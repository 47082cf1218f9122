//! Defaults shared by the daemon and the CLI, so both agree on where things are.

use std::path::PathBuf;

/// `/var/lib/strata` for root, `$XDG_DATA_HOME/strata` (or `~/.local/share/strata`) otherwise.
pub fn default_data_dir() -> PathBuf {
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/strata");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("strata");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/strata"),
        None => PathBuf::from("strata-data"),
    }
}

pub const SOCKET_NAME: &str = "strata.sock";

pub fn default_socket(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Largest gRPC message either side accepts: containerd sends up to 16 MiB.
pub const MAX_MESSAGE_BYTES: usize = 32 << 20;

/// Size of the data messages the daemon streams out.
pub const READ_MESSAGE_BYTES: usize = 1 << 20;

pub const DEFAULT_NAMESPACE: &str = "default";

/// HTTP/2 flow-control window, both sides.
pub const WINDOW_BYTES: u32 = 8 << 20;

/// Largest HTTP/2 frame the daemon accepts.
pub const FRAME_BYTES: u32 = 1 << 20;
