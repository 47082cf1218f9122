//! strata's diff service (`containerd.services.diff.v1.Diff`) called directly,
//! as containerd's proxy differ calls it: what `Apply` returns and writes,
//! which layers it leaves to containerd (Unimplemented), namespaces, and who
//! may reach the socket. The trees it makes are compared with containerd's
//! own differ in tests/containerd_differ.rs.

mod common;

use common::{push_as, sha256_digest, tar_of};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use strata::proto::containerd::services::diff::v1 as dpb;
use strata::proto::containerd::types::{Descriptor, Mount};
use tonic::{Code, Request};

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

struct Served {
    tmp: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<strata::Result<()>>,
}

async fn serve() -> Served {
    let tmp = tempfile::tempdir().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let opts = strata::server::ServeOptions {
        socket: tmp.path().join("s.sock"),
        containerd_diff_socket: Some(tmp.path().join("d.sock")),
        socket_group: None,
        shutdown_grace: Duration::from_secs(10),
        ..strata::server::ServeOptions::new(tmp.path().join("data"))
    };
    let task = tokio::spawn(strata::server::serve(opts, async {
        let _ = stopped.await;
    }));
    for _ in 0..500 {
        if tokio::net::UnixStream::connect(tmp.path().join("d.sock"))
            .await
            .is_ok()
            && tokio::net::UnixStream::connect(tmp.path().join("s.sock"))
                .await
                .is_ok()
        {
            break;
        }
        assert!(!task.is_finished(), "daemon exited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Served {
        tmp,
        stop: Some(stop),
        task,
    }
}

impl Served {
    async fn differ(&self) -> dpb::diff_client::DiffClient<tonic::transport::Channel> {
        let ch = strata::client::connect_channel(&self.tmp.path().join("d.sock"))
            .await
            .unwrap();
        dpb::diff_client::DiffClient::new(ch)
    }
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn apply_rq(
    ns: &str,
    digest: &str,
    media_type: &str,
    size: usize,
    root: &Path,
) -> Request<dpb::ApplyRequest> {
    let mut r = Request::new(dpb::ApplyRequest {
        diff: Some(Descriptor {
            media_type: media_type.into(),
            digest: digest.into(),
            size: size as i64,
            annotations: Default::default(),
        }),
        mounts: vec![Mount {
            r#type: "bind".into(),
            source: root.to_str().unwrap().into(),
            target: String::new(),
            options: vec!["rbind".into(), "rw".into()],
        }],
        payloads: Default::default(),
        sync_fs: true,
    });
    r.metadata_mut()
        .insert("containerd-namespace", ns.parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_unpacks_a_held_layer_and_returns_its_diff_id() {
    if !is_root() {
        eprintln!("skipped: mounting needs root");
        return;
    }
    let s = serve().await;
    let tar = tar_of(
        &[("etc/motd", b"hello\n"), ("bin/tool", &[7u8; 70_000])],
        1_600_000_000,
    );
    let gz = common::filter("gzip", &["-6", "-n"], &tar);
    let mut c = strata::client::connect(&s.tmp.path().join("s.sock"))
        .await
        .unwrap();
    push_as(&mut c, "k8s.io", "", &gz, 1 << 20).await.unwrap();
    push_as(&mut c, "k8s.io", "", &tar, 1 << 20).await.unwrap();
    let mut d = s.differ().await;

    // Both forms unpack to the same files and answer the plain tar's digest.
    for (blob, mt) in [
        (&gz, "application/vnd.oci.image.layer.v1.tar+gzip"),
        (&tar, TAR),
    ] {
        let snap = tempfile::tempdir().unwrap();
        let applied = d
            .apply(apply_rq(
                "k8s.io",
                &sha256_digest(blob),
                mt,
                blob.len(),
                snap.path(),
            ))
            .await
            .unwrap()
            .into_inner()
            .applied
            .unwrap();
        assert_eq!(applied.digest, sha256_digest(&tar), "{mt}");
        assert_eq!(applied.size, tar.len() as i64);
        assert_eq!(applied.media_type, TAR);
        assert_eq!(
            std::fs::read(snap.path().join("etc/motd")).unwrap(),
            b"hello\n"
        );
        assert_eq!(
            std::fs::read(snap.path().join("bin/tool")).unwrap().len(),
            70_000
        );
    }
    // The temporary mount point is gone, nothing is left mounted.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(s.tmp.path().to_str().unwrap()), "{mounts}");
    let left: Vec<_> = std::fs::read_dir(s.tmp.path().join("data/differ-mounts"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let mode = std::fs::metadata(s.tmp.path().join("data/differ-mounts"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    drop((c, d));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_strata_cannot_apply_is_left_to_containerd() {
    let s = serve().await;
    let tar = tar_of(&[("a", b"a")], 1_600_000_000);
    let mut c = strata::client::connect(&s.tmp.path().join("s.sock"))
        .await
        .unwrap();
    push_as(&mut c, "one", "", &tar, 1 << 20).await.unwrap();
    let dg = sha256_digest(&tar);
    let mut d = s.differ().await;
    let snap = tempfile::tempdir().unwrap();
    let code =
        |r: Result<tonic::Response<dpb::ApplyResponse>, tonic::Status>| r.unwrap_err().code();
    // Another namespace's blob, an unknown blob, an encrypted or foreign
    // media type, another digest algorithm: containerd 1.7 moves on.
    let cases = [
        ("two", dg.clone(), TAR.to_string()),
        ("one", sha256_digest(b"nothing"), TAR.to_string()),
        ("one", dg.clone(), format!("{TAR}+gzip+encrypted")),
        (
            "one",
            dg.clone(),
            "application/vnd.oci.image.config.v1+json".into(),
        ),
        (
            "one",
            format!("sha512:{}", "ab".repeat(64)),
            TAR.to_string(),
        ),
    ];
    for (ns, digest, mt) in cases {
        let r = d.apply(apply_rq(ns, &digest, &mt, 0, snap.path())).await;
        assert_eq!(code(r), Code::Unimplemented, "{ns} {digest} {mt}");
    }
    assert!(std::fs::read_dir(snap.path()).unwrap().next().is_none());
    let r = d
        .diff(dpb::DiffRequest::default())
        .await
        .unwrap_err()
        .code();
    assert_eq!(r, Code::Unimplemented);
    // A size that is not the blob's is the caller's error.
    let r = d
        .apply(apply_rq("one", &dg, TAR, tar.len() + 1, snap.path()))
        .await;
    assert_eq!(code(r), Code::InvalidArgument);
    // The socket is root's alone, whatever the group.
    let mode = std::fs::metadata(s.tmp.path().join("d.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    drop((c, d));
    s.stop().await;
}
