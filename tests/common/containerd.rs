//! A private containerd (1.7 or 2.x, from `/opt/strata-ci`) on its own
//! temporary root, state and sockets, optionally using strata as its proxy
//! content store and proxy differ. Stopped (SIGTERM, then SIGKILL) and
//! whatever its snapshotters left mounted under its directory unmounted when
//! dropped, also when a test panics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1_7,
    V2,
}

impl Version {
    pub fn name(self) -> &'static str {
        match self {
            Version::V1_7 => "1.7",
            Version::V2 => "2.x",
        }
    }

    pub fn bin_dir(self) -> PathBuf {
        PathBuf::from(match self {
            Version::V1_7 => "/opt/strata-ci/containerd-1.7/bin",
            Version::V2 => "/opt/strata-ci/containerd-2/bin",
        })
    }

    /// The binaries' directory; panics when they are not installed.
    pub fn require(self) -> PathBuf {
        let dir = self.bin_dir();
        for b in ["containerd", "ctr"] {
            assert!(
                dir.join(b).is_file(),
                "containerd {} is not installed ({} missing): run `bash .ci/containerd-versions install`",
                self.name(),
                dir.join(b).display()
            );
        }
        dir
    }
}

/// How a private containerd is set up.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// `[proxy_plugins.strata] type = "content"` at this socket (and the
    /// built-in content store disabled).
    pub content_proxy: Option<PathBuf>,
    /// `[proxy_plugins.strata-diff] type = "diff"` at this socket, used for
    /// every unpack: 1.7 diff-service order `["strata-diff", "walking"]`, 2.x
    /// `unpack_config` entries with `differ = "strata-diff"`.
    pub diff_proxy: Option<PathBuf>,
    /// Snapshotters 2.x gets an `unpack_config` entry (linux/amd64) for.
    pub snapshotters: Vec<String>,
}

pub struct Containerd {
    child: Option<Child>,
    pub version: Version,
    pub sock: PathBuf,
    pub root: PathBuf,
    pub log: PathBuf,
    ctr: PathBuf,
    dir: Option<tempfile::TempDir>,
}

/// The name of the proxy differ in the configs written here.
pub const DIFFER: &str = "strata-diff";

impl Containerd {
    /// Starts containerd in a fresh `/tmp/<prefix>XXXX` directory (short:
    /// unix socket paths must stay under 108 bytes).
    pub fn start(version: Version, prefix: &str, cfg: &Config) -> Containerd {
        let bin = version.require();
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path().to_path_buf();
        let sock = d.join("c.sock");
        let mut disabled = vec!["\"io.containerd.grpc.v1.cri\"".to_string()];
        if version == Version::V2 {
            disabled.push("\"io.containerd.cri.v1.images\"".into());
            disabled.push("\"io.containerd.cri.v1.runtime\"".into());
        }
        if cfg.content_proxy.is_some() {
            // With two content stores 1.6/1.7 picks one at random and 2.x refuses to start.
            disabled.push("\"io.containerd.content.v1.content\"".into());
        }
        let mut toml = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [{disabled}]

[grpc]
  address = "{s}"
  tcp_address = ""
[ttrpc]
  address = "{s}.ttrpc"
[debug]
  address = ""
  level = "debug"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#,
            d = d.display(),
            s = sock.display(),
            disabled = disabled.join(", ")
        );
        if let Some(p) = &cfg.content_proxy {
            toml += &format!(
                "\n[proxy_plugins.strata]\n  type = \"content\"\n  address = \"{}\"\n",
                p.display()
            );
        }
        if let Some(p) = &cfg.diff_proxy {
            toml += &format!(
                "\n[proxy_plugins.{DIFFER}]\n  type = \"diff\"\n  address = \"{}\"\n",
                p.display()
            );
            if version == Version::V1_7 {
                toml += &format!(
                    "\n[plugins.\"io.containerd.service.v1.diff-service\"]\n  default = [\"{DIFFER}\", \"walking\"]\n"
                );
            }
        }
        if version == Version::V2 {
            let differ = if cfg.diff_proxy.is_some() {
                DIFFER
            } else {
                "walking"
            };
            toml += "\n[plugins.\"io.containerd.transfer.v1.local\"]\n";
            for sn in &cfg.snapshotters {
                toml += &format!(
                    "  [[plugins.\"io.containerd.transfer.v1.local\".unpack_config]]\n    platform = \"linux/amd64\"\n    snapshotter = \"{sn}\"\n    differ = \"{differ}\"\n"
                );
            }
        }
        std::fs::write(d.join("config.toml"), &toml).unwrap();
        let log = d.join("containerd.log");
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new(bin.join("containerd"))
            .arg("--config")
            .arg(d.join("config.toml"))
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut c = Containerd {
            child: Some(child),
            version,
            sock,
            root: d.join("root"),
            log,
            ctr: bin.join("ctr"),
            dir: Some(dir),
        };
        let t = Instant::now();
        loop {
            if let Some(st) = c.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "containerd {} exited ({st}):\n{}\nconfig:\n{toml}",
                    version.name(),
                    c.log_tail(40)
                );
            }
            if c.sock.exists() && c.ctr(&["version"], "default").status.success() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "containerd {} did not start:\n{}",
                version.name(),
                c.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// The last `n` lines of containerd's log.
    pub fn log_tail(&self, n: usize) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Error and warning lines of containerd's log.
    pub fn log_errors(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        s.lines()
            .filter(|l| {
                (l.contains("level=error") || l.contains("level=warn"))
                    && !l.contains("devmapper")
                    && !l.contains("btrfs")
                    && !l.contains("zfs")
                    && !l.contains("aufs")
                    && !l.contains("tracing")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `ctr -a SOCK -n NS ARGS`, killed after 120 s.
    pub fn ctr(&self, args: &[&str], ns: &str) -> Output {
        let mut child = Command::new(&self.ctr)
            .arg("--address")
            .arg(&self.sock)
            .args(["--namespace", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Drain the pipes on threads so a chatty ctr cannot block.
        let mut so = child.stdout.take().unwrap();
        let mut se = child.stderr.take().unwrap();
        let ro = std::thread::spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut so, &mut v).ok();
            v
        });
        let re = std::thread::spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut se, &mut v).ok();
            v
        });
        let t = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if t.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                let st = child.wait().unwrap();
                eprintln!("ctr {args:?} timed out after 120 s");
                break st;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Output {
            status,
            stdout: ro.join().unwrap(),
            stderr: re.join().unwrap(),
        }
    }

    /// `ctr` that must succeed; its stdout.
    pub fn ctr_ok(&self, args: &[&str], ns: &str) -> String {
        let o = self.ctr(args, ns);
        assert!(
            o.status.success(),
            "containerd {}: ctr {args:?} failed: {}\ncontainerd log:\n{}",
            self.version.name(),
            String::from_utf8_lossy(&o.stderr),
            self.log_tail(30)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Where a snapshotter keeps its snapshots.
    pub fn snapshots_dir(&self, snapshotter: &str) -> PathBuf {
        self.root
            .join(format!("io.containerd.snapshotter.v1.{snapshotter}"))
            .join("snapshots")
    }

    /// Stops containerd and unmounts what is left under its directory; the
    /// directory stays until the value is dropped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if t.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if let Some(d) = &self.dir {
            unmount_under(d.path());
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Unmounts every mount point under `dir` (deepest first; lazily if busy).
pub fn unmount_under(dir: &Path) {
    let prefix = format!("{}/", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort();
    points.dedup();
    for p in points.iter().rev() {
        let c = std::ffi::CString::new(p.as_str()).unwrap();
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
