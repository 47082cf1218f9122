//! containerd's content API (`containerd.services.content.v1.Content`), checked
//! through a tonic `ContentClient` against a daemon started in-process: every row
//! of the error-code table and every Write rule of
//! `containerd-content-api.md` (sections 2, 3 and 7).

mod common;
use common::*;

use bytes::Bytes;
use cpb::content_client::ContentClient;
use cpb::WriteAction;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use strata::proto::containerd::services::content::v1 as cpb;
use strata::proto::strata::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

type Content = ContentClient<Channel>;
type Req = cpb::WriteContentRequest;
type Reply = cpb::WriteContentResponse;

const EMPTY_SHA256: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

async fn content_at(socket: &Path) -> Content {
    let ch = strata::client::connect_channel(socket)
        .await
        .expect("connect");
    ContentClient::new(ch)
        .max_decoding_message_size(32 << 20)
        .max_encoding_message_size(32 << 20)
}

async fn content(d: &Daemon) -> Content {
    content_at(&d.socket).await
}

/// A request with the `containerd-namespace` header when `ns` is given.
fn rq<T>(ns: Option<&str>, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(ns) = ns {
        r.metadata_mut()
            .insert("containerd-namespace", ns.parse().unwrap());
    }
    r
}

fn labels(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn info(c: &mut Content, ns: Option<&str>, digest: &str) -> Result<cpb::Info, Status> {
    c.info(rq(
        ns,
        cpb::InfoRequest {
            digest: digest.into(),
        },
    ))
    .await
    .map(|r| r.into_inner().info.expect("InfoResponse.info"))
}

async fn delete(c: &mut Content, ns: Option<&str>, digest: &str) -> Result<(), Status> {
    c.delete(rq(
        ns,
        cpb::DeleteContentRequest {
            digest: digest.into(),
        },
    ))
    .await
    .map(|_| ())
}

async fn update(
    c: &mut Content,
    ns: Option<&str>,
    digest: &str,
    l: HashMap<String, String>,
    paths: &[&str],
) -> Result<cpb::Info, Status> {
    let req = cpb::UpdateRequest {
        info: Some(cpb::Info {
            digest: digest.into(),
            labels: l,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    };
    c.update(rq(ns, req))
        .await
        .map(|r| r.into_inner().info.expect("UpdateResponse.info"))
}

/// The messages of one Read.
async fn read_msgs(
    c: &mut Content,
    ns: Option<&str>,
    digest: &str,
    offset: i64,
    size: i64,
) -> Result<Vec<Bytes>, Status> {
    let mut s = c
        .read(rq(
            ns,
            cpb::ReadContentRequest {
                digest: digest.into(),
                offset,
                size,
            },
        ))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.push(m.data);
    }
    Ok(out)
}

async fn read(
    c: &mut Content,
    ns: Option<&str>,
    digest: &str,
    offset: i64,
    size: i64,
) -> Result<Vec<u8>, Status> {
    Ok(read_msgs(c, ns, digest, offset, size).await?.concat())
}

/// The batches of one List.
async fn list_batches(
    c: &mut Content,
    ns: Option<&str>,
    filters: &[&str],
) -> Result<Vec<Vec<cpb::Info>>, Status> {
    let req = cpb::ListContentRequest {
        filters: filters.iter().map(|f| f.to_string()).collect(),
    };
    let mut s = c.list(rq(ns, req)).await?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.push(m.info);
    }
    Ok(out)
}

async fn list(
    c: &mut Content,
    ns: Option<&str>,
    filters: &[&str],
) -> Result<BTreeSet<String>, Status> {
    let batches = list_batches(c, ns, filters).await?;
    Ok(batches.into_iter().flatten().map(|i| i.digest).collect())
}

async fn status(c: &mut Content, ns: Option<&str>, r: &str) -> Result<cpb::Status, Status> {
    c.status(rq(ns, cpb::StatusRequest { r#ref: r.into() }))
        .await
        .map(|r| r.into_inner().status.expect("StatusResponse.status"))
}

async fn list_statuses(
    c: &mut Content,
    ns: Option<&str>,
    filters: &[&str],
) -> Result<Vec<cpb::Status>, Status> {
    let req = cpb::ListStatusesRequest {
        filters: filters.iter().map(|f| f.to_string()).collect(),
    };
    c.list_statuses(rq(ns, req))
        .await
        .map(|r| r.into_inner().statuses)
}

async fn abort(c: &mut Content, ns: Option<&str>, r: &str) -> Result<(), Status> {
    c.abort(rq(ns, cpb::AbortRequest { r#ref: r.into() }))
        .await
        .map(|_| ())
}

fn stat_req(r: &str) -> Req {
    Req {
        action: WriteAction::Stat as i32,
        r#ref: r.into(),
        ..Default::default()
    }
}

fn stat_total(r: &str, total: i64) -> Req {
    Req {
        total,
        ..stat_req(r)
    }
}

fn write_req(r: &str, offset: i64, data: &[u8]) -> Req {
    Req {
        action: WriteAction::Write as i32,
        r#ref: r.into(),
        offset,
        data: Bytes::copy_from_slice(data),
        ..Default::default()
    }
}

fn commit_req(r: &str, offset: i64, total: i64, expected: &str) -> Req {
    Req {
        action: WriteAction::Commit as i32,
        r#ref: r.into(),
        offset,
        total,
        expected: expected.into(),
        ..Default::default()
    }
}

/// One bidi Write stream: requests go in one at a time and each reply is read
/// before the next request, as containerd's writer does.
struct Writer {
    tx: Option<mpsc::Sender<Req>>,
    rx: Streaming<Reply>,
}

impl Writer {
    async fn open(c: &mut Content, ns: Option<&str>) -> Result<Writer, Status> {
        let (tx, rx) = mpsc::channel::<Req>(4);
        let resp = c.write(rq(ns, ReceiverStream::new(rx))).await?;
        Ok(Writer {
            tx: Some(tx),
            rx: resp.into_inner(),
        })
    }

    /// Sends one request and returns its one reply (or the stream's error).
    async fn call(&mut self, req: Req) -> Result<Reply, Status> {
        let commit = req.action == WriteAction::Commit as i32;
        self.tx
            .as_ref()
            .expect("request side open")
            .send(req)
            .await
            .expect("request stream closed by the server");
        let reply = match tokio::time::timeout(Duration::from_secs(30), self.rx.message())
            .await
            .expect("no reply within 30 s")
        {
            Ok(Some(r)) => r,
            Ok(None) => panic!("the Write stream ended without replying to a request"),
            Err(e) => {
                // An error ends the stream; end our side too.
                self.tx = None;
                return Err(e);
            }
        };
        if commit {
            // COMMIT always ends the stream, without containerd's extra copy of
            // the last reply.
            assert!(
                self.next_after_end().await.is_none(),
                "the stream must end after COMMIT, without an extra reply"
            );
            self.tx = None;
        }
        Ok(reply)
    }

    /// Whatever the server sends after the last reply: must be the end.
    async fn next_after_end(&mut self) -> Option<Reply> {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("the Write stream neither ended nor replied")
            .expect("the Write stream ended with an error")
    }

    /// Asserts nothing more is sent while no request is pending.
    async fn assert_quiet(&mut self) {
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(150), self.rx.message()).await {
            panic!("unexpected extra message on the Write stream: {r:?}");
        }
    }

    /// Ends the request side (client EOF); the server must end its side without
    /// an extra reply.
    async fn finish(mut self) {
        self.tx = None;
        assert!(
            self.next_after_end().await.is_none(),
            "extra reply at client EOF"
        );
    }
}

/// Opens a stream on `r` and returns it with the first STAT reply, retrying
/// while the ref is still locked by a stream that is being torn down.
async fn open_retrying(c: &mut Content, ns: Option<&str>, r: &str) -> (Writer, Reply) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut w = Writer::open(c, ns).await.expect("open Write");
        match w.call(stat_req(r)).await {
            Ok(rep) => return (w, rep),
            Err(e) if e.code() == Code::Unavailable && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("STAT on {r:?}: {e:?}"),
        }
    }
}

/// Writes `data` as a whole blob on ref `r`: STAT with the total, WRITEs of
/// `piece` bytes, COMMIT with the expected digest and `l` labels.
async fn write_blob_with(
    c: &mut Content,
    ns: Option<&str>,
    r: &str,
    data: &[u8],
    piece: usize,
    l: HashMap<String, String>,
) -> Result<Reply, Status> {
    let mut w = Writer::open(c, ns).await?;
    let first = w.call(stat_total(r, data.len() as i64)).await?;
    assert_eq!(first.offset, 0, "fresh ref {r:?} starts at 0");
    let mut off = 0usize;
    for p in data.chunks(piece.max(1)) {
        let rep = w.call(write_req(r, off as i64, p)).await?;
        off += p.len();
        assert_eq!(rep.offset, off as i64);
    }
    let mut commit = commit_req(r, off as i64, data.len() as i64, &sha256_digest(data));
    commit.labels = l;
    w.call(commit).await
}

async fn write_blob(c: &mut Content, ns: Option<&str>, r: &str, data: &[u8]) -> String {
    let rep = write_blob_with(c, ns, r, data, 1 << 20, HashMap::new())
        .await
        .expect("write blob");
    assert_eq!(rep.digest, sha256_digest(data));
    assert_eq!(rep.offset, data.len() as i64);
    rep.digest
}

fn code<T: std::fmt::Debug>(r: Result<T, Status>) -> Code {
    r.expect_err("expected an error").code()
}

fn ts_nanos(t: &Option<prost_types::Timestamp>) -> i128 {
    let t = t.as_ref().expect("timestamp present");
    t.seconds as i128 * 1_000_000_000 + t.nanos as i128
}

// ---------------------------------------------------------------- Info / Delete

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_validates_the_digest_first_then_finds_exact_size_and_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = content(&d).await;
    for bad in [
        "",
        "sha256:xyz",
        "sha256:",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        &EMPTY_SHA256.to_uppercase(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ] {
        assert_eq!(
            code(info(&mut c, None, bad).await),
            Code::InvalidArgument,
            "{bad:?}"
        );
        assert_eq!(
            code(info(&mut c, Some("a"), bad).await),
            Code::InvalidArgument,
            "{bad:?}"
        );
    }
    let data = noise(123_457, 1);
    let digest = sha256_digest(&data);
    assert_eq!(code(info(&mut c, None, &digest).await), Code::NotFound);
    write_blob(&mut c, None, "info-1", &data).await;
    let i = info(&mut c, None, &digest).await.unwrap();
    assert_eq!(
        (i.digest.as_str(), i.size),
        (digest.as_str(), data.len() as i64)
    );
    assert!(ts_nanos(&i.created_at) > 0);
    assert!(i.labels.is_empty());
    // The empty blob is a blob too.
    write_blob(&mut c, None, "info-empty", b"").await;
    let e = info(&mut c, None, EMPTY_SHA256).await.unwrap();
    assert_eq!((e.digest.as_str(), e.size), (EMPTY_SHA256, 0));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_of_a_missing_blob_is_not_found_and_a_second_delete_too() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = content(&d).await;
    assert_eq!(
        code(delete(&mut c, None, "sha256:xyz").await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(delete(&mut c, None, &sha256_digest(b"never")).await),
        Code::NotFound
    );
    let data = noise(50_000, 2);
    let digest = write_blob(&mut c, None, "del", &data).await;
    delete(&mut c, None, &digest).await.unwrap();
    assert_eq!(code(info(&mut c, None, &digest).await), Code::NotFound);
    assert_eq!(
        code(read(&mut c, None, &digest, 0, 0).await),
        Code::NotFound
    );
    assert_eq!(
        code(delete(&mut c, None, &digest).await),
        Code::NotFound,
        "second delete"
    );
    assert!(list(&mut c, None, &[]).await.unwrap().is_empty());
    // It can be written again afterwards.
    write_blob(&mut c, None, "del-again", &data).await;
    assert_eq!(read(&mut c, None, &digest, 0, 0).await.unwrap(), data);
    d.stop().await;
}

// ------------------------------------------------------------------------ Update

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_follows_the_field_mask_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = content(&d).await;
    let data = noise(10_000, 3);
    let rep = write_blob_with(
        &mut c,
        None,
        "upd",
        &data,
        4096,
        labels(&[("a", "1"), ("b", "2")]),
    )
    .await
    .unwrap();
    let dg = rep.digest;
    let before = info(&mut c, None, &dg).await.unwrap();
    assert_eq!(before.labels, labels(&[("a", "1"), ("b", "2")]));

    // Empty mask: replace all labels.
    let u = update(&mut c, None, &dg, labels(&[("c", "3")]), &[])
        .await
        .unwrap();
    assert_eq!(u.labels, labels(&[("c", "3")]));
    assert_eq!(
        info(&mut c, None, &dg).await.unwrap().labels,
        labels(&[("c", "3")])
    );
    // Mask `labels`: replace all labels.
    let u = update(
        &mut c,
        None,
        &dg,
        labels(&[("d", "4"), ("e", "5")]),
        &["labels"],
    )
    .await
    .unwrap();
    assert_eq!(u.labels, labels(&[("d", "4"), ("e", "5")]));
    // `labels.<key>` sets that one key; other labels in the request are ignored.
    let u = update(
        &mut c,
        None,
        &dg,
        labels(&[("f", "6"), ("d", "ignored")]),
        &["labels.f"],
    )
    .await
    .unwrap();
    assert_eq!(u.labels, labels(&[("d", "4"), ("e", "5"), ("f", "6")]));
    let u = update(
        &mut c,
        None,
        &dg,
        labels(&[("containerd.io/gc.root", "2024")]),
        &["labels.containerd.io/gc.root"],
    )
    .await
    .unwrap();
    assert_eq!(
        u.labels.get("containerd.io/gc.root").map(String::as_str),
        Some("2024")
    );
    // An absent value removes the key, so does an empty one.
    let u = update(&mut c, None, &dg, labels(&[]), &["labels.d"])
        .await
        .unwrap();
    assert!(!u.labels.contains_key("d"));
    let u = update(
        &mut c,
        None,
        &dg,
        labels(&[("e", "")]),
        &["labels.e", "labels.containerd.io/gc.root"],
    )
    .await
    .unwrap();
    assert_eq!(u.labels, labels(&[("f", "6")]));
    let i = info(&mut c, None, &dg).await.unwrap();
    assert_eq!(i.labels, labels(&[("f", "6")]));
    // Digest, size and created_at never change.
    assert_eq!(
        (i.digest.as_str(), i.size),
        (dg.as_str(), data.len() as i64)
    );
    assert_eq!(i.created_at, before.created_at);
    assert!(ts_nanos(&i.updated_at) >= ts_nanos(&i.created_at));

    // Other paths: InvalidArgument, nothing changes.
    for p in ["size", "digest", "created_at", "labelsx", ""] {
        assert_eq!(
            code(update(&mut c, None, &dg, labels(&[("z", "9")]), &[p]).await),
            Code::InvalidArgument,
            "path {p:?}"
        );
    }
    assert_eq!(
        code(
            update(
                &mut c,
                None,
                &dg,
                labels(&[("z", "9")]),
                &["labels.z", "size"]
            )
            .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        info(&mut c, None, &dg).await.unwrap().labels,
        labels(&[("f", "6")])
    );

    // key + value up to 4096 bytes is fine, over it is InvalidArgument.
    let v4095 = "v".repeat(4095);
    let v4096 = "v".repeat(4096);
    let u = update(&mut c, None, &dg, labels(&[("k", &v4095)]), &["labels.k"])
        .await
        .unwrap();
    assert_eq!(u.labels.get("k").map(String::len), Some(4095));
    assert_eq!(
        code(update(&mut c, None, &dg, labels(&[("k", &v4096)]), &["labels.k"]).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(update(&mut c, None, &dg, labels(&[("k", &v4096)]), &[]).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(update(&mut c, None, &dg, labels(&[("k", &v4096)]), &["labels"]).await),
        Code::InvalidArgument
    );
    assert_eq!(
        info(&mut c, None, &dg)
            .await
            .unwrap()
            .labels
            .get("k")
            .map(String::len),
        Some(4095)
    );

    // A missing blob is NotFound; a bad digest InvalidArgument.
    let missing = sha256_digest(b"missing");
    assert_eq!(
        code(update(&mut c, None, &missing, labels(&[("a", "1")]), &[]).await),
        Code::NotFound
    );
    assert_eq!(
        code(update(&mut c, None, &missing, labels(&[("a", "1")]), &["labels.a"]).await),
        Code::NotFound
    );
    assert_eq!(
        code(update(&mut c, Some("other"), &dg, labels(&[("a", "1")]), &[]).await),
        Code::NotFound
    );
    assert_eq!(
        code(update(&mut c, None, "sha256:nope", labels(&[("a", "1")]), &[]).await),
        Code::InvalidArgument
    );
    d.stop().await;
}

// -------------------------------------------------------------------------- List

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_select_and_a_bad_filter_is_invalid_argument() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = content(&d).await;
    let ns = Some("lf");
    let mut dg = Vec::new();
    let sets: [&[(&str, &str)]; 4] = [
        &[("a.b", "x"), ("k", "1")],
        &[("a.b", "y"), ("k", "2")],
        &[("k", "1")],
        &[],
    ];
    for (i, l) in sets.iter().enumerate() {
        let rep = write_blob_with(
            &mut c,
            ns,
            &format!("lf-{i}"),
            &noise(2000 + i, 40 + i as u64),
            1 << 20,
            labels(l),
        )
        .await
        .unwrap();
        dg.push(rep.digest);
    }
    let set = |idx: &[usize]| {
        idx.iter()
            .map(|&i| dg[i].clone())
            .collect::<BTreeSet<String>>()
    };
    let f_digest_eq = format!("digest=={}", dg[1]);
    let f_digest_re = format!("digest~=^{}", &dg[2][..16]);
    let f_or_digest = format!("digest=={}", dg[3]);
    let cases: Vec<(Vec<&str>, BTreeSet<String>)> = vec![
        (vec![], set(&[0, 1, 2, 3])),
        (vec![f_digest_eq.as_str()], set(&[1])),
        (vec![r#"labels."a.b"==x"#], set(&[0])),
        (vec![r#"labels."a.b""#], set(&[0, 1])),
        (vec!["labels.k"], set(&[0, 1, 2])),
        (vec!["labels.nope"], set(&[])),
        (vec!["labels.k!=1"], set(&[1, 3])),
        (vec![r#"labels."a.b"!=x"#], set(&[1, 2, 3])),
        (vec!["labels.k~=^[12]$"], set(&[0, 1, 2])),
        (vec!["labels.k~=2"], set(&[1])),
        (vec![f_digest_re.as_str()], set(&[2])),
        (vec![r#"labels.k==1,labels."a.b"==x"#], set(&[0])),
        (vec![r#"labels.k==1,labels."a.b""#], set(&[0])),
        (vec!["labels.k==2", f_or_digest.as_str()], set(&[1, 3])),
        (vec![r#"labels."a.b"==x"#, "labels.k==1"], set(&[0, 2])),
    ];
    for (f, want) in &cases {
        assert_eq!(&list(&mut c, ns, f).await.unwrap(), want, "filters {f:?}");
    }
    // Bad filters, alone or ORed with a good one.
    for bad in [
        "==x",
        r#"labels."open"#,
        "digest~=(",
        "a b",
        "labels.k==1,",
        "labels.k===1",
    ] {
        assert_eq!(
            code(list(&mut c, ns, &[bad]).await),
            Code::InvalidArgument,
            "filter {bad:?}"
        );
        assert_eq!(
            code(list(&mut c, ns, &["labels.k", bad]).await),
            Code::InvalidArgument,
            "filter {bad:?}"
        );
    }
    // List answers per namespace: the default one holds none of these.
    assert!(list(&mut c, None, &[]).await.unwrap().is_empty());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_streams_batches_of_at_most_100_infos() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut s = d.client().await;
    let mut want = BTreeSet::new();
    for i in 0..250u64 {
        let data = format!("blob number {i}\n").into_bytes();
        let r = push_as(&mut s, "batch", "", &data, 1 << 20).await.unwrap();
        want.insert(r.digest);
    }
    let mut c = content(&d).await;
    let batches = list_batches(&mut c, Some("batch"), &[]).await.unwrap();
    assert!(batches.len() >= 3, "{} batches", batches.len());
    for b in &batches {
        assert!(!b.is_empty() && b.len() <= 100, "a batch of {}", b.len());
    }
    let all: Vec<String> = batches.iter().flatten().map(|i| i.digest.clone()).collect();
    assert_eq!(all.len(), 250, "every blob exactly once");
    assert_eq!(all.into_iter().collect::<BTreeSet<_>>(), want);
    for i in batches.iter().flatten() {
        assert!(i.size > 0 && i.size < 30);
    }
    d.stop().await;
}

// -------------------------------------------------------------------------- Read

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_honours_offset_and_size() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = content(&d).await;
    let data = noise(3_000_000 + 12_345, 5);
    let n = data.len() as i64;
    let dg = write_blob(&mut c, None, "read", &data).await;

    // Whole blob, in messages of at most 1 MiB.
    let msgs = read_msgs(&mut c, None, &dg, 0, 0).await.unwrap();
    assert!(msgs.len() >= 3, "{} messages", msgs.len());
    for m in &msgs {
        assert!(m.len() <= 1 << 20, "a message of {} bytes", m.len());
    }
    assert_eq!(msgs.concat(), data);

    let u = |a: i64, b: i64| data[a as usize..b as usize].to_vec();
    let cases: &[(i64, i64, Vec<u8>)] = &[
        (-5, 0, data.clone()),                    // offset < 0 is 0
        (-5, 10, u(0, 10)),                       // ... with a size
        (i64::MIN, 3, u(0, 3)),                   // ... any negative offset
        (10, 0, u(10, n)),                        // size 0: to the end
        (100, 50, u(100, 150)),                   // a range
        (1_048_570, 20, u(1_048_570, 1_048_590)), // across a message boundary
        (n - 10, 1000, u(n - 10, n)),             // size past the end is clamped
        (0, n + 1_000_000, data.clone()),
        (n - 1, 0, u(n - 1, n)),
        (n, 0, vec![]), // offset == size: an empty stream
        (n, 5, vec![]),
    ];
    for (off, size, want) in cases {
        let got = read(&mut c, None, &dg, *off, *size)
            .await
            .unwrap_or_else(|e| panic!("read({off}, {size}): {e:?}"));
        assert!(
            got == *want,
            "read({off}, {size}) gave {} bytes, want {}",
            got.len(),
            want.len()
        );
    }
    assert_eq!(
        code(read(&mut c, None, &dg, n + 1, 0).await),
        Code::OutOfRange
    );
    assert_eq!(
        code(read(&mut c, None, &dg, n + 1_000_000, 10).await),
        Code::OutOfRange
    );
    assert_eq!(
        code(read(&mut c, None, &sha256_digest(b"nope"), 0, 0).await),
        Code::NotFound
    );
    assert_eq!(
        code(read(&mut c, None, "sha256:123", 0, 0).await),
        Code::InvalidArgument
    );

    // The empty blob: an empty stream at 0, OutOfRange after.
    write_blob(&mut c, None, "read-empty", b"").await;
    assert!(read_msgs(&mut c, None, EMPTY_SHA256, 0, 0)
        .await
        .unwrap()
        .concat()
        .is_empty());
    assert!(read(&mut c, None, EMPTY_SHA256, 0, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        code(read(&mut c, None, EMPTY_SHA256, 1, 0).await),
        Code::OutOfRange
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_32k_reads_of_a_multi_megabyte_blob_reassemble_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut s = d.client().await;
    // A tar layer pushed through strata.v1 (so it is chunked as a tar), read the
    // way `ctr content get` reads through containerd: Info + Read of 32 KiB.
    let big = noise(2_000_000, 6);
    let small = noise(500_000, 7);
    let data = tar_of(
        &[
            ("usr/bin/big", &big),
            ("etc/x", b"x\n"),
            ("usr/lib/small", &small),
        ],
        1_700_000_000,
    );
    let dg = push(&mut s, &data).await.digest;
    let mut c = content(&d).await;
    let mut out = Vec::with_capacity(data.len());
    let mut reads = 0;
    loop {
        let i = info(&mut c, None, &dg).await.unwrap();
        assert_eq!(i.size, data.len() as i64);
        let off = out.len() as i64;
        if off == i.size {
            break;
        }
        let piece = read(&mut c, None, &dg, off, 32 * 1024).await.unwrap();
        assert_eq!(
            piece.len() as i64,
            (i.size - off).min(32 * 1024),
            "read at {off}"
        );
        out.extend_from_slice(&piece);
        reads += 1;
    }
    assert_eq!(reads, data.len().div_ceil(32 * 1024));
    assert!(out == data, "reassembled bytes differ");
    d.stop().await;
}

// ------------------------------------------------------------------------- Write

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_first_message_without_a_ref_is_invalid_argument() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = content(&d).await;
    for first in [
        stat_req(""),
        write_req("", 0, b"data"),
        commit_req("", 0, 4, ""),
    ] {
        let mut w = Writer::open(&mut c, None).await.unwrap();
        let e = w
            .call(first.clone())
            .await
            .expect_err("a first message without ref must fail");
        assert_eq!(e.code(), Code::InvalidArgument, "{first:?}: {e:?}");
        assert!(w.next_after_end().await.is_none());
    }
    // Also through a namespace header, and nothing was created.
    let mut w = Writer::open(&mut c, Some("x")).await.unwrap();
    assert_eq!(
        code(w.call(stat_total("", 10)).await),
        Code::InvalidArgument
    );
    assert!(list_statuses(&mut c, None, &[]).await.unwrap().is_empty());
    assert!(list_statuses(&mut c, Some("x"), &[])
        .await
        .unwrap()
        .is_empty());
    let ingest: Vec<_> = std::fs::read_dir(tmp.path().join("ingest"))
        .unwrap()
        .collect();
    assert!(ingest.is_empty(), "{ingest:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_gives_exactly_one_full_reply_per_request() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = content(&d).await;
    let data = noise(300_000, 8);
    let (p1, p2) = data.split_at(120_000);
    let r = "default/7/layer";
    let mut w = Writer::open(&mut c, None).await.unwrap();

    // A bare STAT opens the ingest: offset 0, the empty digest, timestamps.
    let s0 = w.call(stat_req(r)).await.unwrap();
    assert_eq!(s0.action, WriteAction::Stat as i32);
    assert_eq!(
        (s0.offset, s0.total, s0.digest.as_str()),
        (0, 0, EMPTY_SHA256)
    );
    let started = ts_nanos(&s0.started_at);
    assert!(started > 0 && ts_nanos(&s0.updated_at) >= started);
    w.assert_quiet().await;
    // A total is recorded.
    let s1 = w.call(stat_total(r, data.len() as i64)).await.unwrap();
    assert_eq!(
        (s1.offset, s1.total, s1.digest.as_str()),
        (0, data.len() as i64, EMPTY_SHA256)
    );
    assert_eq!(ts_nanos(&s1.started_at), started);
    // WRITE replies carry the new offset and the running digest.
    let w1 = w.call(write_req(r, 0, p1)).await.unwrap();
    assert_eq!(w1.action, WriteAction::Write as i32);
    assert_eq!((w1.offset, w1.total), (p1.len() as i64, data.len() as i64));
    assert_eq!(w1.digest, sha256_digest(p1));
    w.assert_quiet().await;
    // A STAT ping writes nothing; containerd does not repeat the ref.
    let s2 = w
        .call(Req {
            action: WriteAction::Stat as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (s2.offset, s2.digest.as_str()),
        (p1.len() as i64, sha256_digest(p1).as_str())
    );
    let w2 = w.call(write_req(r, p1.len() as i64, p2)).await.unwrap();
    assert_eq!(
        (w2.offset, w2.digest.as_str()),
        (data.len() as i64, sha256_digest(&data).as_str())
    );
    let s3 = w.call(stat_req(r)).await.unwrap();
    assert_eq!(
        (s3.offset, s3.total),
        (data.len() as i64, data.len() as i64)
    );
    assert_eq!(s3.digest, sha256_digest(&data));
    assert_eq!(ts_nanos(&s3.started_at), started, "started_at is fixed");
    assert!(
        ts_nanos(&s3.updated_at) >= ts_nanos(&w1.updated_at),
        "updated_at moves forward"
    );
    assert!(
        ts_nanos(&s3.updated_at) > started,
        "updated_at moves on writes"
    );
    w.assert_quiet().await;

    // Status of the open ingest agrees.
    let st = status(&mut c, None, r).await.unwrap();
    assert_eq!(
        (st.r#ref.as_str(), st.offset, st.total),
        (r, data.len() as i64, data.len() as i64)
    );
    assert_eq!(ts_nanos(&st.started_at), started);

    // COMMIT: one reply with the final offset and digest, then the stream ends.
    let cm = w
        .call(commit_req(
            r,
            data.len() as i64,
            data.len() as i64,
            &sha256_digest(&data),
        ))
        .await
        .unwrap();
    assert_eq!(cm.action, WriteAction::Commit as i32);
    assert_eq!(
        (cm.offset, cm.digest.as_str()),
        (data.len() as i64, sha256_digest(&data).as_str())
    );
    assert!(w.next_after_end().await.is_none(), "the stream has ended");
    assert_eq!(
        info(&mut c, None, &cm.digest).await.unwrap().size,
        data.len() as i64
    );
    assert_eq!(read(&mut c, None, &cm.digest, 0, 0).await.unwrap(), data);
    assert_eq!(
        code(status(&mut c, None, r).await),
        Code::NotFound,
        "a committed ingest is gone"
    );

    // Client EOF ends the stream without an extra reply; the ingest stays.
    let mut w = Writer::open(&mut c, None).await.unwrap();
    assert_eq!(w.call(stat_req("eof")).await.unwrap().offset, 0);
    assert_eq!(w.call(write_req("eof", 0, b"abc")).await.unwrap().offset, 3);
    w.finish().await;
    assert_eq!(status(&mut c, None, "eof").await.unwrap().offset, 3);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_at_the_wrong_offset_is_out_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = content(&d).await;
    let r = "oor";
    let mut w = Writer::open(&mut c, None).await.unwrap();
    assert_eq!(
        w.call(write_req(r, 0, b"0123456789")).await.unwrap().offset,
        10
    );
    // A gap.
    assert_eq!(code(w.call(write_req(r, 15, b"x")).await), Code::OutOfRange);
    assert!(w.next_after_end().await.is_none());
    assert_eq!(
        status(&mut c, None, r).await.unwrap().offset,
        10,
        "the bytes before stay"
    );
    // An overlap.
    let (mut w, s) = open_retrying(&mut c, None, r).await;
    assert_eq!(s.offset, 10);
    assert_eq!(
        code(w.call(write_req(r, 5, b"56789")).await),
        Code::OutOfRange
    );
    // A COMMIT at the wrong offset too.
    let (mut w, _) = open_retrying(&mut c, None, r).await;
    assert_eq!(
        code(w.call(commit_req(r, 11, 0, "")).await),
        Code::OutOfRange
    );
    // On a fresh ref, the first write must be at 0.
    let mut w = Writer::open(&mut c, None).await.unwrap();
    assert_eq!(
        code(w.call(write_req("fresh", 3, b"abc")).await),
        Code::OutOfRange
    );
    // The ingest is intact and continues at the right offset.
    let (mut w, s) = open_retrying(&mut c, None, r).await;
    assert_eq!(
        (s.offset, s.digest.as_str()),
        (10, sha256_digest(b"0123456789").as_str())
    );
    let rep = w.call(write_req(r, 10, b"abc")).await.unwrap();
    assert_eq!(
        (rep.offset, rep.digest.as_str()),
        (13, sha256_digest(b"0123456789abc").as_str())
    );
    let cm = w.call(commit_req(r, 13, 13, "")).await.unwrap();
    assert_eq!(
        read(&mut c, None, &cm.digest, 0, 0).await.unwrap(),
        b"0123456789abc"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_zero_with_data_present_truncates() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = content(&d).await;
    // WRITE at 0 after data: start over with the new data.
    let mut w = Writer::open(&mut c, None).await.unwrap();
    assert_eq!(
        w.call(write_req("t1", 0, b"hello world"))
            .await
            .unwrap()
            .offset,
        11
    );
    let rep = w.call(write_req("t1", 0, b"xyz")).await.unwrap();
    assert_eq!(
        (rep.offset, rep.digest.as_str()),
        (3, sha256_digest(b"xyz").as_str())
    );
    let s = w.call(stat_req("t1")).await.unwrap();
    assert_eq!(
        (s.offset, s.digest.as_str()),
        (3, sha256_digest(b"xyz").as_str())
    );
    let cm = w
        .call(commit_req("t1", 3, 3, &sha256_digest(b"xyz")))
        .await
        .unwrap();
    assert_eq!(
        (cm.offset, cm.digest.as_str()),
        (3, sha256_digest(b"xyz").as_str())
    );
    assert_eq!(read(&mut c, None, &cm.digest, 0, 0).await.unwrap(), b"xyz");

    // An empty WRITE leaving offset unset truncates to 0.
    let mut w = Writer::open(&mut c, None).await.unwrap();
    assert_eq!(w.call(write_req("t2", 0, b"abc")).await.unwrap().offset, 3);
    let rep = w.call(write_req("t2", 0, b"")).await.unwrap();
    assert_eq!((rep.offset, rep.digest.as_str()), (0, EMPTY_SHA256));
    w.finish().await;
    assert_eq!(status(&mut c, None, "t2").await.unwrap().offset, 0);

    // A COMMIT leaving offset unset after data commits an empty blob.
    let ns = Some("trunc");
    let mut w = Writer::open(&mut c, ns).await.unwrap();
    assert_eq!(
        w.call(write_req("t3", 0, b"abcdef")).await.unwrap().offset,
        6
    );
    let cm = w
        .call(Req {
            action: WriteAction::Commit as i32,
            r#ref: "t3".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((cm.offset, cm.digest.as_str()), (0, EMPTY_SHA256));
    assert_eq!(info(&mut c, ns, EMPTY_SHA256).await.unwrap().size, 0);
    assert_eq!(
        code(info(&mut c, ns, &sha256_digest(b"abcdef")).await),
        Code::NotFound
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_with_the_wrong_size_fails_and_the_upload_stays_resumable() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = content(&d).await;
    let data = noise(100_000, 9);
    let r = "size";
    let mut w = Writer::open(&mut c, None).await.unwrap();
    assert_eq!(w.call(stat_total(r, 100_000)).await.unwrap().total, 100_000);
    assert_eq!(
        w.call(write_req(r, 0, &data[..60_000]))
            .await
            .unwrap()
            .offset,
        60_000
    );
    let e = w
        .call(commit_req(r, 60_000, 0, ""))
        .await
        .expect_err("60000 of 100000 bytes");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(w.next_after_end().await.is_none());
    let st = status(&mut c, None, r).await.unwrap();
    assert_eq!((st.offset, st.total), (60_000, 100_000));
    assert_eq!(
        list_statuses(&mut c, None, &[&format!("ref=={r}")])
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        code(info(&mut c, None, &sha256_digest(&data[..60_000])).await),
        Code::NotFound
    );

    // The COMMIT's own total is checked too.
    let (mut w, s) = open_retrying(&mut c, None, r).await;
    assert_eq!((s.offset, s.total), (60_000, 100_000));
    assert_eq!(
        code(w.call(commit_req(r, 60_000, 50_000, "")).await),
        Code::FailedPrecondition
    );

    // Resume: STAT gives the kept offset and digest; finish.
    let (mut w, s) = open_retrying(&mut c, None, r).await;
    assert_eq!(s.offset, 60_000);
    assert_eq!(s.digest, sha256_digest(&data[..60_000]));
    assert_eq!(
        w.call(stat_total(r, 100_000)).await.unwrap().offset,
        60_000,
        "the same total keeps the bytes"
    );
    assert_eq!(
        w.call(write_req(r, 60_000, &data[60_000..]))
            .await
            .unwrap()
            .offset,
        100_000
    );
    let cm = w
        .call(commit_req(r, 100_000, 100_000, &sha256_digest(&data)))
        .await
        .unwrap();
    assert_eq!(
        (cm.offset, cm.digest.as_str()),
        (100_000, sha256_digest(&data).as_str())
    );
    assert_eq!(read(&mut c, None, &cm.digest, 0, 0).await.unwrap(), data);
    assert_eq!(code(status(&mut c, None, r).await), Code::NotFound);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_with_the_wrong_digest_fails_and_the_upload_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = content(&d).await;
    let data = noise(70_000, 10);
    let wrong = sha256_digest(b"something else");
    let mut w = Writer::open(&mut c, None).await.unwrap();
    assert_eq!(
        w.call(write_req("dig", 0, &data)).await.unwrap().offset,
        70_000
    );
    let e = w
        .call(commit_req("dig", 70_000, 70_000, &wrong))
        .await
        .expect_err("wrong digest");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(status(&mut c, None, "dig").await.unwrap().offset, 70_000);
    assert_eq!(
        code(info(&mut c, None, &sha256_digest(&data)).await),
        Code::NotFound
    );
    assert_eq!(code(info(&mut c, None, &wrong).await), Code::NotFound);
    // The same bytes commit with the right digest.
    let (mut w, s) = open_retrying(&mut c, None, "dig").await;
    assert_eq!(
        (s.offset, s.digest.as_str()),
        (70_000, sha256_digest(&data).as_str())
    );
    let cm = w
        .call(commit_req("dig", 70_000, 70_000, &sha256_digest(&data)))
        .await
        .unwrap();
    assert_eq!(cm.digest, sha256_digest(&data));
    assert_eq!(read(&mut c, None, &cm.digest, 0, 0).await.unwrap(), data);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_content_is_already_exists_at_commit_and_on_any_expected() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = content(&d).await;
    let data = noise(40_000, 11);
    let dg = write_blob(&mut c, None, "first", &data).await;

    // COMMIT of content already stored in the namespace: AlreadyExists, ingest removed.
    let mut w = Writer::open(&mut c, None).await.unwrap();
    assert_eq!(
        w.call(write_req("again", 0, &data)).await.unwrap().offset,
        40_000
    );
    let e = w
        .call(commit_req("again", 40_000, 40_000, ""))
        .await
        .expect_err("content exists");
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert_eq!(code(status(&mut c, None, "again").await), Code::NotFound);

    // An expected digest already stored: AlreadyExists at once, on a bare STAT.
    let mut w = Writer::open(&mut c, None).await.unwrap();
    let e = w
        .call(Req {
            expected: dg.clone(),
            ..stat_req("bare")
        })
        .await
        .expect_err("expected exists");
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(w.next_after_end().await.is_none());
    assert_eq!(code(status(&mut c, None, "bare").await), Code::NotFound);

    // ... and in the middle of an upload, on a WRITE: the ingest is aborted.
    let mut w = Writer::open(&mut c, None).await.unwrap();
    assert_eq!(
        w.call(write_req("mid", 0, &data[..1000]))
            .await
            .unwrap()
            .offset,
        1000
    );
    let e = w
        .call(Req {
            expected: dg.clone(),
            ..write_req("mid", 1000, &data[1000..2000])
        })
        .await
        .expect_err("expected exists");
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert_eq!(code(status(&mut c, None, "mid").await), Code::NotFound);

    // ... and on a COMMIT carrying the expected digest.
    let mut w = Writer::open(&mut c, None).await.unwrap();
    assert_eq!(
        w.call(write_req("late", 0, &data)).await.unwrap().offset,
        40_000
    );
    assert_eq!(
        code(w.call(commit_req("late", 40_000, 40_000, &dg)).await),
        Code::AlreadyExists
    );
    assert_eq!(code(status(&mut c, None, "late").await), Code::NotFound);

    assert!(list_statuses(&mut c, None, &[]).await.unwrap().is_empty());
    assert_eq!(read(&mut c, None, &dg, 0, 0).await.unwrap(), data);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_with_data_expected_and_commit_works_and_stores_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = content(&d).await;
    let data = noise(250_000, 12);
    let l = labels(&[("containerd.io/gc.root", "2024-01-01"), ("a.b/c", "x y z")]);
    let mut w = Writer::open(&mut c, Some("one")).await.unwrap();
    let req = Req {
        action: WriteAction::Commit as i32,
        r#ref: "one-shot".into(),
        total: data.len() as i64,
        expected: sha256_digest(&data),
        offset: 0,
        data: data.clone().into(),
        labels: l.clone(),
    };
    let cm = w.call(req).await.unwrap();
    assert_eq!(
        (cm.offset, cm.digest.as_str()),
        (data.len() as i64, sha256_digest(&data).as_str())
    );
    assert!(w.next_after_end().await.is_none());
    let i = info(&mut c, Some("one"), &cm.digest).await.unwrap();
    assert_eq!((i.size, &i.labels), (data.len() as i64, &l));
    assert_eq!(
        read(&mut c, Some("one"), &cm.digest, 0, 0).await.unwrap(),
        data
    );
    let found = list(&mut c, Some("one"), &[r#"labels."containerd.io/gc.root""#])
        .await
        .unwrap();
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        vec![cm.digest.clone()]
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_with_a_different_total_starts_over() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = content(&d).await;
    let r = "default/2/total";
    let mut w = Writer::open(&mut c, None).await.unwrap();
    assert_eq!(w.call(stat_total(r, 100)).await.unwrap().total, 100);
    assert_eq!(
        w.call(write_req(r, 0, &[7u8; 40])).await.unwrap().offset,
        40
    );
    w.finish().await;
    // The same total (or none) resumes.
    let (w, s) = open_retrying(&mut c, None, r).await;
    assert_eq!((s.offset, s.total), (40, 100));
    w.finish().await;
    let mut w = Writer::open(&mut c, None).await.unwrap();
    let s = w.call(stat_total(r, 100)).await.unwrap();
    assert_eq!((s.offset, s.total), (40, 100));
    w.finish().await;
    // Another total is another upload: the bytes kept are dropped.
    let mut w = Writer::open(&mut c, None).await.unwrap();
    let s = w.call(stat_total(r, 60)).await.unwrap();
    assert_eq!(
        (s.offset, s.total, s.digest.as_str()),
        (0, 60, EMPTY_SHA256)
    );
    w.finish().await;
    let st = status(&mut c, None, r).await.unwrap();
    assert_eq!((st.offset, st.total), (0, 60));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stream_on_an_open_ref_is_unavailable() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = content(&d).await;
    let r = "default/3/locked";
    let mut w1 = Writer::open(&mut c, None).await.unwrap();
    assert_eq!(w1.call(write_req(r, 0, b"first")).await.unwrap().offset, 5);
    for first in [stat_req(r), write_req(r, 5, b"x"), commit_req(r, 5, 5, "")] {
        let mut w2 = Writer::open(&mut c, None).await.unwrap();
        let e = w2.call(first).await.expect_err("ref is locked");
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    }
    // The same ref in another namespace is another ingest.
    let mut other = Writer::open(&mut c, Some("elsewhere")).await.unwrap();
    assert_eq!(other.call(stat_req(r)).await.unwrap().offset, 0);
    other.finish().await;
    // The first stream was not disturbed.
    assert_eq!(
        w1.call(write_req(r, 5, b" second")).await.unwrap().offset,
        12
    );
    w1.finish().await;
    let (mut w3, s) = open_retrying(&mut c, None, r).await;
    assert_eq!(
        (s.offset, s.digest.as_str()),
        (12, sha256_digest(b"first second").as_str())
    );
    let cm = w3.call(commit_req(r, 12, 12, "")).await.unwrap();
    assert_eq!(
        read(&mut c, None, &cm.digest, 0, 0).await.unwrap(),
        b"first second"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_stream_keeps_the_partial_upload_for_a_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let data = noise(3_500_000, 13);
    let r = "default/9/tar-blobs/sha256/broken";
    let (p1, rest) = data.split_at(1 << 20);
    let (p2, _) = rest.split_at(700_000);
    let confirmed = (p1.len() + p2.len()) as i64;
    {
        // A client of its own, dropped mid-upload with a WRITE in flight.
        let mut c1 = content(&d).await;
        let w = {
            let mut w = Writer::open(&mut c1, None).await.unwrap();
            assert_eq!(
                w.call(stat_total(r, data.len() as i64))
                    .await
                    .unwrap()
                    .offset,
                0
            );
            assert_eq!(
                w.call(write_req(r, 0, p1)).await.unwrap().offset,
                p1.len() as i64
            );
            assert_eq!(
                w.call(write_req(r, p1.len() as i64, p2))
                    .await
                    .unwrap()
                    .offset,
                confirmed
            );
            w.tx.as_ref()
                .unwrap()
                .send(write_req(
                    r,
                    confirmed,
                    &data[confirmed as usize..confirmed as usize + 500_000],
                ))
                .await
                .unwrap();
            w
        };
        let Writer { tx, rx } = w;
        drop(rx);
        drop(c1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(tx);
    }
    let mut c = content(&d).await;
    // A new stream on the same ref resumes from the bytes kept.
    let (mut w, s) = open_retrying(&mut c, None, r).await;
    let kept = s.offset;
    assert!(
        kept == confirmed || kept == confirmed + 500_000,
        "kept {kept} bytes, confirmed {confirmed}"
    );
    assert_eq!(s.total, data.len() as i64);
    assert_eq!(
        s.digest,
        sha256_digest(&data[..kept as usize]),
        "the kept bytes are a prefix"
    );
    assert_eq!(status(&mut c, None, r).await.unwrap().offset, kept);
    let mut off = kept as usize;
    for p in data[off..].chunks(1 << 20) {
        assert_eq!(
            w.call(write_req(r, off as i64, p)).await.unwrap().offset,
            (off + p.len()) as i64
        );
        off += p.len();
    }
    let cm = w
        .call(commit_req(
            r,
            off as i64,
            data.len() as i64,
            &sha256_digest(&data),
        ))
        .await
        .unwrap();
    assert_eq!(cm.digest, sha256_digest(&data));
    assert!(read(&mut c, None, &cm.digest, 0, 0).await.unwrap() == data);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_resumes_after_a_daemon_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = noise(2_600_000, 14);
    let kept = 1_500_000usize;
    let r = "default/1/restart";
    let d = Daemon::start(tmp.path()).await;
    {
        let mut c = content(&d).await;
        let mut w = Writer::open(&mut c, None).await.unwrap();
        assert_eq!(
            w.call(stat_total(r, data.len() as i64))
                .await
                .unwrap()
                .offset,
            0
        );
        for (i, p) in data[..kept].chunks(500_000).enumerate() {
            assert_eq!(
                w.call(write_req(r, (i * 500_000) as i64, p))
                    .await
                    .unwrap()
                    .offset,
                (i * 500_000 + p.len()) as i64
            );
        }
        w.finish().await;
        let st = status(&mut c, None, r).await.unwrap();
        assert_eq!((st.offset, st.total), (kept as i64, data.len() as i64));
    }
    d.stop().await;

    let d = Daemon::start(tmp.path()).await;
    let mut c = content(&d).await;
    let st = status(&mut c, None, r).await.unwrap();
    assert_eq!(
        (st.r#ref.as_str(), st.offset, st.total),
        (r, kept as i64, data.len() as i64)
    );
    assert_eq!(list_statuses(&mut c, None, &[]).await.unwrap().len(), 1);
    let mut w = Writer::open(&mut c, None).await.unwrap();
    let s = w.call(stat_req(r)).await.unwrap();
    assert_eq!((s.offset, s.total), (kept as i64, data.len() as i64));
    assert_eq!(s.digest, sha256_digest(&data[..kept]));
    assert_eq!(
        w.call(write_req(r, kept as i64, &data[kept..]))
            .await
            .unwrap()
            .offset,
        data.len() as i64
    );
    let cm = w
        .call(commit_req(r, data.len() as i64, 0, &sha256_digest(&data)))
        .await
        .unwrap();
    assert_eq!(
        (cm.offset, cm.digest.as_str()),
        (data.len() as i64, sha256_digest(&data).as_str())
    );
    assert!(read(&mut c, None, &cm.digest, 0, 0).await.unwrap() == data);
    assert!(list_statuses(&mut c, None, &[]).await.unwrap().is_empty());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_16_mib_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut c = content(&d).await;
    let data = noise(16 << 20, 15);
    let mut w = Writer::open(&mut c, None).await.unwrap();
    assert_eq!(
        w.call(stat_total("big", data.len() as i64))
            .await
            .unwrap()
            .offset,
        0
    );
    let rep = w.call(write_req("big", 0, &data)).await.unwrap();
    assert_eq!(
        (rep.offset, rep.digest.as_str()),
        (16 << 20, sha256_digest(&data).as_str())
    );
    let cm = w
        .call(commit_req("big", 16 << 20, 16 << 20, &sha256_digest(&data)))
        .await
        .unwrap();
    assert_eq!(cm.digest, sha256_digest(&data));
    assert!(read(&mut c, None, &cm.digest, 0, 0).await.unwrap() == data);
    d.stop().await;
}

// ---------------------------------------------------- Status / ListStatuses / Abort

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            walk(&p, out);
        }
        out.push(p);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_list_statuses_and_abort_with_arbitrary_refs() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let d = Daemon::start(&data_dir).await;
    let mut c = content(&d).await;
    let etc_passwd = std::fs::metadata("/etc/passwd")
        .ok()
        .map(|m| m.modified().unwrap());

    assert_eq!(code(status(&mut c, None, "unknown").await), Code::NotFound);
    assert_eq!(code(abort(&mut c, None, "unknown").await), Code::NotFound);

    let refs = [
        "default/1/tar-blobs/sha256/abc",
        "../../etc/passwd",
        "/absolute/path",
        "plain",
        "with spaces, commas==and \"quotes\" ünïcödé",
    ];
    for (i, r) in refs.iter().enumerate() {
        let mut w = Writer::open(&mut c, None).await.unwrap();
        assert_eq!(w.call(stat_total(r, 1000)).await.unwrap().offset, 0);
        assert_eq!(
            w.call(write_req(r, 0, &vec![b'a' + i as u8; 10 + i]))
                .await
                .unwrap()
                .offset,
            (10 + i) as i64
        );
        w.finish().await;
    }
    for (i, r) in refs.iter().enumerate() {
        let st = status(&mut c, None, r).await.unwrap();
        assert_eq!(
            (st.r#ref.as_str(), st.offset, st.total),
            (*r, (10 + i) as i64, 1000),
            "{r:?}"
        );
        assert!(
            ts_nanos(&st.started_at) > 0 && ts_nanos(&st.updated_at) >= ts_nanos(&st.started_at)
        );
    }
    // Ingests are per namespace.
    assert_eq!(
        code(status(&mut c, Some("other"), "plain").await),
        Code::NotFound
    );
    assert!(list_statuses(&mut c, Some("other"), &[])
        .await
        .unwrap()
        .is_empty());

    let refs_of =
        |v: Vec<cpb::Status>| v.into_iter().map(|s| s.r#ref).collect::<BTreeSet<String>>();
    let set = |rs: &[&str]| {
        rs.iter()
            .map(|r| r.to_string())
            .collect::<BTreeSet<String>>()
    };
    assert_eq!(
        refs_of(list_statuses(&mut c, None, &[]).await.unwrap()),
        set(&refs)
    );
    assert_eq!(
        refs_of(list_statuses(&mut c, None, &["ref==plain"]).await.unwrap()),
        set(&["plain"])
    );
    assert_eq!(
        refs_of(
            list_statuses(&mut c, None, &["ref==default/1/tar-blobs/sha256/abc"])
                .await
                .unwrap()
        ),
        set(&[refs[0]])
    );
    assert_eq!(
        refs_of(
            list_statuses(&mut c, None, &[r#"ref=="../../etc/passwd""#])
                .await
                .unwrap()
        ),
        set(&[refs[1]])
    );
    assert_eq!(
        refs_of(
            list_statuses(&mut c, None, &["ref==../../etc/passwd"])
                .await
                .unwrap()
        ),
        set(&[refs[1]])
    );
    assert_eq!(
        refs_of(
            list_statuses(&mut c, None, &["ref~=^default/"])
                .await
                .unwrap()
        ),
        set(&[refs[0]])
    );
    assert_eq!(
        refs_of(
            list_statuses(&mut c, None, &["ref==plain", "ref~=^/abs"])
                .await
                .unwrap()
        ),
        set(&[refs[2], refs[3]])
    );
    assert_eq!(
        refs_of(list_statuses(&mut c, None, &["ref!=plain"]).await.unwrap()).len(),
        refs.len() - 1
    );
    assert!(list_statuses(&mut c, None, &["ref==nope"])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        code(list_statuses(&mut c, None, &["ref~=("]).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(list_statuses(&mut c, None, &["ref=="]).await),
        Code::InvalidArgument
    );

    // On disk: one flat file per ingest in ingest/, nothing anywhere else.
    let ingest_dir = data_dir.join("ingest");
    let files: Vec<_> = std::fs::read_dir(&ingest_dir).unwrap().flatten().collect();
    assert_eq!(files.len(), refs.len(), "{files:?}");
    for f in &files {
        assert!(
            f.file_type().unwrap().is_file(),
            "{:?} is not a plain file",
            f.path()
        );
        let name = f.file_name().into_string().unwrap();
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'.' || b.is_ascii_lowercase()),
            "{name:?}"
        );
        assert!(
            !name.contains("passwd") && !name.contains("abc") && !name.contains(".."),
            "{name:?}"
        );
    }
    let top: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        top,
        vec![std::ffi::OsString::from("data")],
        "nothing is created outside the data dir"
    );
    let mut all = Vec::new();
    walk(tmp.path(), &mut all);
    for p in &all {
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(
            !["passwd", "abc", "etc", "absolute", "path", "tar-blobs"].contains(&name.as_ref()),
            "ref used as a path: {p:?}"
        );
    }
    assert!(!Path::new("/absolute").exists());
    assert_eq!(
        std::fs::metadata("/etc/passwd")
            .ok()
            .map(|m| m.modified().unwrap()),
        etc_passwd
    );

    // Abort removes each ingest and its bytes; a second Abort is NotFound.
    for r in &refs {
        abort(&mut c, None, r)
            .await
            .unwrap_or_else(|e| panic!("abort {r:?}: {e:?}"));
        assert_eq!(code(status(&mut c, None, r).await), Code::NotFound, "{r:?}");
        assert_eq!(code(abort(&mut c, None, r).await), Code::NotFound, "{r:?}");
    }
    assert!(list_statuses(&mut c, None, &[]).await.unwrap().is_empty());
    assert_eq!(std::fs::read_dir(&ingest_dir).unwrap().count(), 0);
    // An aborted ref starts again from zero.
    let mut w = Writer::open(&mut c, None).await.unwrap();
    let s = w.call(stat_req(refs[0])).await.unwrap();
    assert_eq!((s.offset, s.total, s.digest.as_str()), (0, 0, EMPTY_SHA256));
    w.finish().await;
    d.stop().await;
}

// -------------------------------------------------------------------- Namespaces

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_isolate_blobs_and_an_expected_digest_adopts_across_them() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut s = d.client().await;
    let mut c = content(&d).await;
    let data = noise(1_500_000, 16);
    let dg = write_blob(&mut c, Some("a"), "default/1/ns", &data).await;
    assert_eq!(
        info(&mut c, Some("a"), &dg).await.unwrap().size,
        data.len() as i64
    );
    assert_eq!(code(info(&mut c, Some("b"), &dg).await), Code::NotFound);
    assert_eq!(
        code(info(&mut c, None, &dg).await),
        Code::NotFound,
        "no header means namespace default"
    );
    assert_eq!(
        code(info(&mut c, Some("default"), &dg).await),
        Code::NotFound
    );
    assert_eq!(
        code(read(&mut c, Some("b"), &dg, 0, 0).await),
        Code::NotFound
    );
    assert_eq!(code(delete(&mut c, Some("b"), &dg).await), Code::NotFound);
    assert_eq!(
        code(update(&mut c, Some("b"), &dg, labels(&[("x", "1")]), &[]).await),
        Code::NotFound
    );
    assert!(list(&mut c, Some("b"), &[]).await.unwrap().is_empty());
    assert!(list(&mut c, None, &[]).await.unwrap().is_empty());
    assert_eq!(
        list(&mut c, Some("a"), &[])
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![dg.clone()]
    );

    // Writing the same content into b with the expected digest: AlreadyExists
    // at once, and b then holds it without a byte moving.
    let before = stats(&mut s).await;
    let mut w = Writer::open(&mut c, Some("b")).await.unwrap();
    let e = w
        .call(Req {
            expected: dg.clone(),
            ..stat_total("default/1/ns", data.len() as i64)
        })
        .await
        .expect_err("adopted");
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let i = info(&mut c, Some("b"), &dg).await.unwrap();
    assert_eq!(
        (i.digest.as_str(), i.size),
        (dg.as_str(), data.len() as i64)
    );
    let after = stats(&mut s).await;
    assert_eq!(
        after.chunk_plain_bytes, before.chunk_plain_bytes,
        "no bytes moved"
    );
    assert_eq!(
        (after.blobs, after.contents),
        (before.blobs + 1, before.contents)
    );
    assert!(list_statuses(&mut c, Some("b"), &[])
        .await
        .unwrap()
        .is_empty());
    assert!(read(&mut c, Some("b"), &dg, 0, 0).await.unwrap() == data);
    // Deleting it from b leaves a's copy alone.
    delete(&mut c, Some("b"), &dg).await.unwrap();
    assert_eq!(code(info(&mut c, Some("b"), &dg).await), Code::NotFound);
    assert!(read(&mut c, Some("a"), &dg, 0, 0).await.unwrap() == data);

    // No header and header `default` are the same namespace.
    let small = write_blob(&mut c, None, "plain", b"default namespace").await;
    assert_eq!(
        info(&mut c, Some("default"), &small).await.unwrap().size,
        17
    );
    assert_eq!(code(info(&mut c, Some("a"), &small).await), Code::NotFound);
    // A malformed namespace header is refused.
    assert_eq!(
        code(info(&mut c, Some("bad/ns"), &small).await),
        Code::InvalidArgument
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_containerd_listener_uses_its_own_default_namespace() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("strata.sock");
    let csocket = tmp.path().join("containerd.sock");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let opts = strata::server::ServeOptions {
        socket: socket.clone(),
        containerd_socket: Some(csocket.clone()),
        containerd_namespace: "k8s.io".into(),
        shutdown_grace: Duration::from_secs(10),
        ..strata::server::ServeOptions::new(tmp.path().to_path_buf())
    };
    let task = tokio::spawn(strata::server::serve(opts, async {
        let _ = stopped.await;
    }));
    for _ in 0..500 {
        if tokio::net::UnixStream::connect(&csocket).await.is_ok()
            && tokio::net::UnixStream::connect(&socket).await.is_ok()
        {
            break;
        }
        assert!(!task.is_finished(), "daemon exited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut cd = content_at(&csocket).await;
    let mut main = content_at(&socket).await;
    let dg = write_blob(&mut cd, None, "default/1/cd", b"from containerd").await;
    assert_eq!(info(&mut cd, None, &dg).await.unwrap().size, 15);
    assert_eq!(info(&mut main, Some("k8s.io"), &dg).await.unwrap().size, 15);
    assert_eq!(code(info(&mut main, None, &dg).await), Code::NotFound);
    // The header still wins on the containerd listener.
    assert_eq!(
        code(info(&mut cd, Some("default"), &dg).await),
        Code::NotFound
    );
    let other = write_blob(&mut main, None, "main", b"from the main socket").await;
    assert_eq!(
        info(&mut cd, Some("default"), &other).await.unwrap().size,
        20
    );
    assert_eq!(code(info(&mut cd, None, &other).await), Code::NotFound);
    drop((cd, main));
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

// ------------------------------------------------------------------------- Dedup

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_api_writes_are_chunked_like_a_push() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path()).await;
    let mut s = d.client().await;
    let body = noise(3_000_000, 17);
    let small = noise(20_000, 18);
    let a = tar_of(
        &[("usr/lib/libbig.so", &body), ("etc/conf", &small)],
        1_000_000_000,
    );
    // The same layer with one byte of the first header changed (the name; the
    // header checksum follows).
    let b = tar_of(
        &[("usr/lib/libbig.sp", &body), ("etc/conf", &small)],
        1_000_000_000,
    );
    assert_eq!(a.len(), b.len());
    let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert!((1..=3).contains(&differing), "{differing} bytes differ");
    push(&mut s, &a).await;
    let s1 = stats(&mut s).await;
    let mut c = content(&d).await;
    let dg = write_blob(&mut c, Some("other"), "default/1/layer", &b).await;
    let s2 = stats(&mut s).await;
    assert_ne!(dg, sha256_digest(&a));
    let grew = s2.chunk_plain_bytes - s1.chunk_plain_bytes;
    assert!(grew < 4096, "chunk_plain_bytes grew by {grew}");
    let unique = s2.unique_plain_bytes - s1.unique_plain_bytes;
    assert!(unique < 8192, "unique_plain_bytes grew by {unique}");
    assert!(read(&mut c, Some("other"), &dg, 0, 0).await.unwrap() == b);
    d.stop().await;
}

/// Waits until the daemon has converted every blob kept as received.
async fn wait_converted(s: &mut Client) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while stats(s).await.pending_conversions > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "not converted in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_layer_written_is_kept_as_received_then_converted() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start_custom(tmp.path(), |o| {
        o.convert_after = Some(Duration::from_millis(100))
    })
    .await;
    let mut s = d.client().await;
    let tar = tar_of(
        &[
            ("usr/lib/libbig.so", &noise(3_000_000, 21)),
            ("etc/conf", &noise(20_000, 22)),
        ],
        5,
    );
    let gz = python_gzip(&tar, 6);
    let mut c = content(&d).await;
    let dg = write_blob(&mut c, None, "default/1/layer", &gz).await;
    assert!(read(&mut c, None, &dg, 0, 0).await.unwrap() == gz);
    wait_converted(&mut s).await;
    let info = s
        .stat(pb::StatRequest {
            namespace: "default".into(),
            digest: dg.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.codec, "gzip");
    assert!(info.kept.starts_with("zlib-6"), "kept as {}", info.kept);
    assert_eq!(info.diff_id, sha256_digest(&tar));
    assert!(read(&mut c, None, &dg, 0, 0).await.unwrap() == gz);
    let plain = read_req(
        &mut s,
        pb::ReadRequest {
            namespace: "default".into(),
            digest: dg.clone(),
            plain: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(plain == tar);
    // Stored as a push stores it: the same tar pushed plain adds no chunk.
    let before = stats(&mut s).await;
    let pushed = push(&mut s, &tar).await;
    assert_eq!(pushed.new_chunks, 0);
    assert_eq!(stats(&mut s).await.chunks, before.chunks);
    d.stop().await;
}

// ------------------------------------------------------------------------- Crash

/// `strata serve` as a child process converting as soon as it can.
fn spawn_daemon(data: &Path, socket: &Path, log: &Path) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .arg("--socket")
        .arg(socket)
        .args(["--convert-after", "0s", "--metrics-addr", "off"])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawning strata serve")
}

async fn ready(socket: &Path) -> Client {
    for _ in 0..3000 {
        if let Ok(mut c) = strata::client::connect(socket).await {
            if c.stats(pb::StatsRequest {}).await.is_ok() {
                return c;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the daemon did not answer within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_stay_exact_when_the_daemon_is_killed_while_converting() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, socket, log) = (
        tmp.path().join("data"),
        tmp.path().join("s.sock"),
        tmp.path().join("daemon.log"),
    );
    let layers: Vec<Vec<u8>> = (0..6u64)
        .map(|i| {
            let tar = tar_of(
                &[
                    ("lib/a.so", &noise(5_000_000, 40 + i)),
                    ("etc/b", &noise(30_000, 50 + i)),
                ],
                i,
            );
            python_gzip(&tar, 6)
        })
        .collect();
    let mut child = spawn_daemon(&data, &socket, &log);
    ready(&socket).await;
    let mut c = content_at(&socket).await;
    let mut digests = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        digests.push(write_blob(&mut c, None, &format!("layer-{i}"), l).await);
    }
    drop(c);
    // Kill it at moments spread over the conversions; each restart goes on
    // with what is still marked.
    for delay_ms in [0u64, 25, 50, 75, 100, 130, 160, 200, 250, 320, 400, 500] {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        child = spawn_daemon(&data, &socket, &log);
        ready(&socket).await;
        let mut c = content_at(&socket).await;
        for (d, l) in digests.iter().zip(&layers) {
            let got = read(&mut c, None, d, 0, 0).await.unwrap();
            assert!(got == *l, "{d} differs after a kill at {delay_ms} ms");
        }
    }
    let mut s = ready(&socket).await;
    wait_converted(&mut s).await;
    let v = s
        .verify(pb::VerifyRequest { deep: true })
        .await
        .unwrap()
        .into_inner();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    for d in &digests {
        let info = s
            .stat(pb::StatRequest {
                namespace: "default".into(),
                digest: d.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(info.kept.starts_with("zlib-6"), "{d} kept as {}", info.kept);
    }
    let mut c = content_at(&socket).await;
    for (d, l) in digests.iter().zip(&layers) {
        assert!(read(&mut c, None, d, 0, 0).await.unwrap() == *l);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("blob converted"), "no conversion logged");
}
