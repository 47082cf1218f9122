//! A real containerd using strata as its proxy content store: its garbage
//! collector deletes every blob its own database does not know, and must still
//! never touch what a build tool pushed through strata.v1 in its own namespace.
//! Needs Debian's containerd (`.ci/deps` installs it) and root.

mod common;
use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use strata::proto::strata::v1 as pb;
use strata::server::{self, ServeOptions};

struct Containerd {
    child: Child,
    socket: std::path::PathBuf,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn start_containerd(dir: &Path, proxy: &Path) -> Containerd {
    assert!(
        Command::new("containerd").arg("--version").output().is_ok(),
        "containerd is not installed: run `bash .ci/deps` (Debian's containerd package)"
    );
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test starts containerd and must run as root"
    );
    let socket = dir.join("containerd.sock");
    let config = format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.content.v1.content", "io.containerd.grpc.v1.cri"]
[grpc]
  address = "{s}"
  tcp_address = ""
[ttrpc]
  address = "{s}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.gc.v1.scheduler"]
  deletion_threshold = 1
  # No collection at start-up: on a busy machine it could land after the
  # test's ingests and take them (nothing roots them) before the test looks.
  startup_delay = "1h"
[proxy_plugins]
  [proxy_plugins.strata]
    type = "content"
    address = "{p}"
"#,
        d = dir.display(),
        s = socket.display(),
        p = proxy.display()
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
    let child = Command::new("containerd")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let c = Containerd { child, socket };
    let t = Instant::now();
    while !c.socket.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "containerd did not start; see {}/containerd.log",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c
}

fn ctr(c: &Containerd, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let mut cmd = Command::new("ctr");
    cmd.arg("--address")
        .arg(&c.socket)
        .args(["--namespace", "gctest"])
        .args(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("ctr");
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            i.write_all(data).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

async fn listed(client: &mut Client, ns: &str) -> Vec<String> {
    let req = pb::ListRequest {
        namespace: ns.into(),
        label_filters: vec![],
    };
    client
        .list(req)
        .await
        .unwrap()
        .into_inner()
        .blobs
        .into_iter()
        .map(|b| b.digest)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_gc_never_deletes_a_build_tools_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let proxy = tmp.path().join("content.sock");
    let opts = ServeOptions {
        containerd_socket: Some(proxy.clone()),
        ..ServeOptions::new(data_dir.clone())
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(server::serve(opts, async {
        let _ = stop_rx.await;
    }));
    while !proxy.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = strata::client::connect(&data_dir.join("strata.sock"))
        .await
        .unwrap();

    // A build tool pushes a layer in its own namespace.
    let layer = tar_of(
        &[("app/big.bin", &noise(2_000_000, 77)), ("app/x", b"x")],
        1,
    );
    let built = push_as(&mut client, "build", "", &layer, 1 << 20)
        .await
        .unwrap();
    let before = stats(&mut client).await;

    let cdir = tmp.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = start_containerd(&cdir, &proxy);
    // containerd ingests the same layer (adopted: no bytes move) and a blob of its own.
    let own = noise(50_000, 78);
    let own_digest = sha256_digest(&own);
    for (name, data, digest) in [("layer", &layer, &built.digest), ("own", &own, &own_digest)] {
        let size = data.len().to_string();
        ctr(
            &c,
            &[
                "content",
                "ingest",
                "--expected-size",
                &size,
                "--expected-digest",
                digest,
                name,
            ],
            Some(data),
        );
    }
    assert_eq!(ctr(&c, &["content", "get", &built.digest], None), layer);
    let mut in_containerd = listed(&mut client, "containerd").await;
    in_containerd.sort();
    let mut want = vec![built.digest.clone(), own_digest.clone()];
    want.sort();
    assert_eq!(
        in_containerd, want,
        "containerd's writes land in its listener's namespace"
    );
    let mid = stats(&mut client).await;
    assert_eq!(
        mid.chunk_plain_bytes - before.chunk_plain_bytes,
        own.len() as u64,
        "the layer was stored once"
    );

    // containerd forgets both; its GC then deletes them from the store...
    ctr(&c, &["content", "rm", &built.digest, &own_digest], None);
    let t = Instant::now();
    while !listed(&mut client, "containerd").await.is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "containerd's GC did not delete its blobs from strata"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...but the build tool's blob, in its own namespace, is untouched and whole.
    assert_eq!(
        listed(&mut client, "build").await,
        vec![built.digest.clone()]
    );
    assert_eq!(
        read_range(&mut client, "build", &built.digest, 0, 0)
            .await
            .unwrap(),
        layer
    );
    let after = stats(&mut client).await;
    assert_eq!((after.blobs, after.contents), (1, 1));
    assert_eq!(
        after.chunks, mid.chunks,
        "deletes release references; chunks stay until collected"
    );

    drop(c);
    let _ = stop_tx.send(());
    daemon.await.unwrap().unwrap();
}
