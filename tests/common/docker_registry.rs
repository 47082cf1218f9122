//! Debian's `docker-registry` (distribution 2.8) started by a test on a free
//! loopback port: plain HTTP, or TLS with a certificate the test made, with
//! htpasswd Basic auth or a Bearer token service when asked. Its access log
//! is kept so tests can count the requests that reached it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = "/usr/bin/docker-registry";

#[derive(Default)]
pub struct Config<'a> {
    /// PEM certificate and key files to serve TLS with.
    pub tls: Option<(&'a Path, &'a Path)>,
    /// An htpasswd file (bcrypt): Basic auth required.
    pub htpasswd: Option<&'a Path>,
    /// Bearer tokens: realm URL, service, issuer, and the PEM bundle of
    /// certificates whose keys may sign tokens.
    pub token: Option<(&'a str, &'a str, &'a str, &'a Path)>,
}

pub struct DockerRegistry {
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub root: PathBuf,
    log: PathBuf,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl DockerRegistry {
    pub fn start(dir: &Path, cfg: Config) -> DockerRegistry {
        assert!(
            Path::new(BIN).exists(),
            "{BIN} is missing: install Debian's docker-registry (.ci/deps does)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let root = dir.join("storage");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut y = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n",
            root.display()
        );
        if let Some((cert, key)) = cfg.tls {
            y += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
        }
        if let Some(h) = cfg.htpasswd {
            y += &format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                h.display()
            );
        }
        if let Some((realm, service, issuer, bundle)) = cfg.token {
            y += &format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                bundle.display()
            );
        }
        let conf = dir.join("config.yml");
        std::fs::write(&conf, y).unwrap();
        let log = dir.join("registry.log");
        let child = Command::new(BIN)
            .arg("serve")
            .arg(&conf)
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("{BIN}: {e}"));
        let mut r = DockerRegistry {
            child,
            addr,
            root,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&r.addr).is_err() {
            if let Some(st) = r.child.try_wait().unwrap() {
                panic!("docker-registry exited ({st}): {}", r.log());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Blob GETs the registry answered for `repo` so far (from its access log).
    pub fn blob_gets(&self, repo: &str) -> usize {
        let needle = format!("\"GET /v2/{repo}/blobs/sha256:");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// Bytes of its storage directory (what it keeps on disk).
    pub fn stored_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            std::fs::read_dir(p)
                .map(|d| {
                    d.flatten()
                        .map(|e| {
                            let m = e.metadata().unwrap();
                            if m.is_dir() {
                                walk(&e.path())
                            } else {
                                m.len()
                            }
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(&self.root)
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
