//! Engines pulling through strata configured as their registry mirror, with
//! Debian's docker-registry (distribution 2.8) as the upstream: podman
//! (registries.conf `[[registry.mirror]]`) and containerd's `ctr` (a
//! hosts.toml `[host."http://…"]` with pull and resolve). The first pull goes
//! through strata, which fetches every blob from the upstream once and keeps
//! it (the tag is an image `strata images` lists); the engine's digest is the
//! upstream's; once the engine has dropped the image, a second pull is served
//! by strata alone: the upstream's access log shows no new blob GET.
//!
//! Every tool runs as root with private state in a temporary directory: the
//! upstream's storage and config; podman's storage (vfs), run root, tmpdir,
//! registries.conf, storage.conf, containers.conf and signature policy;
//! a containerd of its own (native snapshotter, no CRI). Only podman's
//! blob-info cache is the host's (/var/lib/containers/cache, as for every
//! skopeo call of the suite: containers/image has no setting for it). A
//! missing tool fails the test: .ci/deps installs them all.

mod common;

use common::docker_registry::{free_port, Config, DockerRegistry};
use common::serve_child::ServeChild;
use common::sha256_digest as sha;
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const REPO: &str = "lib/app";
const REPO_TAG: &str = "lib/app:1";

/// Panics unless `tool --version` runs: these tests never skip.
fn need(tool: &str) {
    match Command::new(tool).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        other => panic!(
            "{tool} is needed by this test and does not run ({other:?}); .ci/deps installs it"
        ),
    }
}

/// Runs a prepared command; its stdout, or a panic naming what failed with
/// its stderr and `log`'s contents.
fn run(cmd: &mut Command, log: &Path) -> Vec<u8> {
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}\n---- {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        log.display(),
        fs::read_to_string(log).unwrap_or_default()
    );
    out.stdout
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap().trim().to_string()
}

/// The image every test pushes upstream: a config and one gzip layer.
struct Image {
    layout: PathBuf,
    manifest: String,
    blobs: Vec<(String, Vec<u8>)>,
}

impl Image {
    fn write(layout: &Path) -> Image {
        let dir = layout.join("blobs/sha256");
        fs::create_dir_all(&dir).unwrap();
        let put = |data: &[u8]| {
            let d = sha(data);
            fs::write(dir.join(&d[7..]), data).unwrap();
            d
        };
        let text: Vec<u8> = (0..400_000u32)
            .flat_map(|i| format!("line {} of the mirrored layer\n", i % 5000).into_bytes())
            .take(400_000)
            .collect();
        let tar = common::tar_of(
            &[
                ("etc/app.conf", &b"mirror = true\n"[..]),
                ("usr/share/app/text", &text),
                ("usr/lib/app.so", &common::noise(300_000, 16)),
            ],
            1_600_000_000,
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let layer = gz.finish().unwrap();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha(&tar)]},
        }))
        .unwrap();
        let (cd, ld) = (put(&config), put(&layer));
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": layer.len()}],
        }))
        .unwrap();
        let md = put(&manifest);
        let index = json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
             "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "1"}}]});
        fs::write(layout.join("index.json"), index.to_string()).unwrap();
        fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        Image {
            layout: layout.to_path_buf(),
            manifest: md.clone(),
            blobs: vec![(md, manifest), (cd, config), (ld, layer)],
        }
    }

    fn config_digest(&self) -> &str {
        &self.blobs[1].0
    }

    fn layer_digest(&self) -> &str {
        &self.blobs[2].0
    }
}

/// An image pushed with skopeo into a docker-registry upstream, and strata
/// mirroring it (fields drop in order: the temporary directory goes last).
struct Mirrored {
    strata: ServeChild,
    strata_addr: String,
    up: DockerRegistry,
    image: Image,
    tmp: tempfile::TempDir,
}

impl Mirrored {
    fn new() -> Mirrored {
        need("skopeo");
        let tmp = tempfile::tempdir().unwrap();
        let image = Image::write(&tmp.path().join("layout"));
        let up = DockerRegistry::start(&tmp.path().join("upstream"), Config::default());
        let dest = format!("docker://{}/{REPO_TAG}", up.addr);
        let log = tmp.path().join("upstream/registry.log");
        run(
            Command::new("skopeo").args([
                "copy",
                "--dest-tls-verify=false",
                &format!("oci:{}:1", image.layout.display()),
                &dest,
            ]),
            &log,
        );
        let raw = run(
            Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw", &dest]),
            &log,
        );
        assert_eq!(sha(&raw), image.manifest, "the upstream keeps the manifest");
        let strata_addr = format!("127.0.0.1:{}", free_port());
        let strata = ServeChild::start_with(
            &[
                "--registry-listen",
                &strata_addr,
                "--registry-mirror-of",
                &format!("http://{}", up.addr),
            ],
            &[],
        );
        let m = Mirrored {
            strata,
            strata_addr,
            up,
            image,
            tmp,
        };
        assert_eq!(m.blob_gets(), 0, "a push GETs no blob");
        m
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// What engines pull: the image by its upstream name.
    fn reference(&self) -> String {
        format!("{}/{REPO_TAG}", self.up.addr)
    }

    /// Blob GETs the upstream answered so far (its access log).
    fn blob_gets(&self) -> usize {
        // The access log line is written as the handler returns, right after
        // the body went out: give a request that just ended time to show.
        std::thread::sleep(Duration::from_millis(300));
        self.up.blob_gets(REPO)
    }

    /// The first pull went through strata: its tag is an image of the
    /// registry's namespace, every blob reads back as the upstream gave it,
    /// and each was fetched from the upstream exactly once. Blob GETs so far.
    fn first_pull_went_through(&self) -> usize {
        let images = self.strata.images("registry");
        assert!(
            images.contains_key(REPO_TAG),
            "strata does not list {REPO_TAG} (did the pull go through it?): {images:#?}"
        );
        for (d, bytes) in &self.image.blobs {
            let out = self.strata.run(&["cat", "-n", "registry", d]);
            assert!(
                out.status.success() && &out.stdout == bytes,
                "strata does not hold {d} as the upstream gave it: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let gets = self.blob_gets();
        assert_eq!(
            gets,
            2,
            "config and layer fetched from the upstream once each, by strata:\n{}",
            self.up.log()
        );
        gets
    }

    fn second_pull_stayed_local(&self, gets_before: usize) {
        assert_eq!(
            self.blob_gets(),
            gets_before,
            "the second pull asked the upstream for blobs:\n{}",
            self.up.log()
        );
    }
}

/// podman as root with nothing of the host's: storage, configs and policy
/// in `dir` (drop-ins in /etc/containers/registries.conf.d still apply; the
/// upstream's random port keeps them out of the way).
struct Podman {
    dir: PathBuf,
    log: PathBuf,
}

impl Podman {
    fn new(dir: &Path, m: &Mirrored) -> Podman {
        need("podman");
        fs::create_dir_all(dir.join("tmp")).unwrap();
        let w = |name: &str, body: String| fs::write(dir.join(name), body).unwrap();
        w(
            "registries.conf",
            format!(
                "unqualified-search-registries = []\n\n[[registry]]\nlocation = \"{}\"\n\
                 insecure = true\n\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
                m.up.addr, m.strata_addr
            ),
        );
        w(
            "storage.conf",
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/run\"\n",
                dir.display()
            ),
        );
        w(
            "containers.conf",
            "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\n".into(),
        );
        w(
            "policy.json",
            r#"{"default": [{"type": "insecureAcceptAnything"}]}"#.into(),
        );
        Podman {
            dir: dir.to_path_buf(),
            log: m.strata.log.clone(),
        }
    }

    fn podman(&self, args: &[&str]) -> String {
        let d = &self.dir;
        text(run(
            Command::new("podman")
                .arg("--root")
                .arg(d.join("root"))
                .arg("--runroot")
                .arg(d.join("run"))
                .arg("--tmpdir")
                .arg(d.join("tmp"))
                .args([
                    "--storage-driver",
                    "vfs",
                    "--cgroup-manager",
                    "cgroupfs",
                    "--events-backend",
                    "none",
                ])
                .args(args)
                .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
                .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
                .env("CONTAINERS_CONF", d.join("containers.conf"))
                .env("HOME", d)
                .env("TMPDIR", d.join("tmp"))
                .env_remove("XDG_CONFIG_HOME")
                .env_remove("XDG_RUNTIME_DIR"),
            &self.log,
        ))
    }

    fn pull(&self, reference: &str) {
        let policy = self.dir.join("policy.json");
        self.podman(&[
            "pull",
            "--signature-policy",
            policy.to_str().unwrap(),
            reference,
        ]);
    }
}

/// A containerd of its own (socket, root, state in `dir`; CRI off), driven
/// with `ctr` in namespace `mirror-test`.
struct Containerd {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The native snapshotter mounts nothing; anything left would keep the
        // temporary directory from going away.
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| Path::new(m).starts_with(&self.dir))
            .collect();
        under.sort_unstable_by(|a, b| b.cmp(a));
        for m in under {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
    }
}

impl Containerd {
    fn start(dir: &Path) -> Containerd {
        need("containerd");
        need("ctr");
        fs::create_dir_all(dir).unwrap();
        let d = dir.display();
        fs::write(
            dir.join("config.toml"),
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/c.sock\"\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n\
                 [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n"
            ),
        )
        .unwrap();
        let log = dir.join("containerd.log");
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("containerd starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(dir.join("c.sock")).is_err() {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "containerd exited ({st}): {}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Containerd {
            child,
            dir: dir.to_path_buf(),
            log,
        }
    }

    fn ctr(&self, args: &[&str]) -> String {
        text(run(
            Command::new("ctr")
                .arg("--address")
                .arg(self.dir.join("c.sock"))
                .args(["--namespace", "mirror-test"])
                .args(args),
            &self.log,
        ))
    }

    /// The target digest `ctr images ls` shows for `reference`.
    fn image_digest(&self, reference: &str) -> String {
        let ls = self.ctr(&["images", "ls"]);
        ls.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.first() == Some(&reference))
            .and_then(|cols| cols.get(2).map(|d| d.to_string()))
            .unwrap_or_else(|| panic!("{reference} not in ctr images ls:\n{ls}"))
    }
}

#[test]
fn podman_pulls_through_strata_as_its_mirror() {
    let m = Mirrored::new();
    let podman = Podman::new(&m.dir("podman"), &m);
    let reference = m.reference();

    podman.pull(&reference);
    let before = m.first_pull_went_through();
    let inspect = |f: &str| podman.podman(&["image", "inspect", "--format", f, &reference]);
    assert_eq!(inspect("{{.Digest}}"), m.image.manifest);
    assert_eq!(inspect("{{.Id}}"), m.image.config_digest()[7..]);

    // podman forgets the image; strata alone serves it again.
    podman.podman(&["rmi", &reference]);
    assert_eq!(podman.podman(&["images", "-q"]), "", "podman holds nothing");
    podman.pull(&reference);
    assert_eq!(inspect("{{.Digest}}"), m.image.manifest);
    m.second_pull_stayed_local(before);
}

#[test]
fn ctr_pulls_through_strata_as_its_mirror() {
    let m = Mirrored::new();
    let ctd = Containerd::start(&m.dir("ctd"));
    let upstream = &m.up.addr;
    let hosts = m.dir("hosts");
    fs::create_dir_all(hosts.join(upstream)).unwrap();
    fs::write(
        hosts.join(upstream).join("hosts.toml"),
        format!(
            "server = \"http://{upstream}\"\n\n[host.\"http://{}\"]\n  \
             capabilities = [\"pull\", \"resolve\"]\n",
            m.strata_addr
        ),
    )
    .unwrap();
    let reference = m.reference();
    let hosts = hosts.to_str().unwrap();
    let pull = || {
        ctd.ctr(&[
            "images",
            "pull",
            "--snapshotter",
            "native",
            "--hosts-dir",
            hosts,
            &reference,
        ])
    };

    pull();
    let before = m.first_pull_went_through();
    assert_eq!(ctd.image_digest(&reference), m.image.manifest);

    // containerd forgets the image, its blobs and its snapshots (an unpacked
    // layer would let it skip the layer's fetch); strata alone serves it again.
    ctd.ctr(&["images", "rm", "--sync", &reference]);
    assert_eq!(
        ctd.ctr(&["content", "ls", "-q"]),
        "",
        "containerd holds no blob"
    );
    assert_eq!(
        ctd.ctr(&["snapshots", "--snapshotter", "native", "ls"])
            .lines()
            .count(),
        1,
        "containerd holds no snapshot (the header line only)"
    );
    pull();
    assert_eq!(ctd.image_digest(&reference), m.image.manifest);
    let content = ctd.ctr(&["content", "ls", "-q"]);
    assert!(
        content.lines().any(|l| l == m.image.layer_digest()),
        "the layer was fetched again: {content}"
    );
    m.second_pull_stayed_local(before);
}
