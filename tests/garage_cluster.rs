//! The Garage harness (tests/common/garage.rs): a three-node cluster starts,
//! every node speaks S3 (objects PUT through one node are read back through
//! the others, signed by `object_store`'s SigV4), the bucket and key exist,
//! and with one node killed the other two keep a quorum and keep serving;
//! the node rejoins when started again.

mod common;

use common::garage::Garage;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutPayload};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// An S3 client for the bucket through `endpoint`, with the harness's key.
fn s3(g: &Garage, endpoint: &str) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region(g.region())
        .with_bucket_name(g.bucket())
        .with_access_key_id(g.access_key())
        .with_secret_access_key(g.secret_key())
        .build()
        .unwrap()
}

fn put(rt: &tokio::runtime::Runtime, g: &Garage, endpoint: &str, key: &str, data: &[u8]) {
    let s = s3(g, endpoint);
    rt.block_on(s.put(&ObjPath::from(key), PutPayload::from(data.to_vec())))
        .unwrap_or_else(|e| panic!("PUT {key} via {endpoint}: {e}\n{}", g.logs(20)));
}

fn get(rt: &tokio::runtime::Runtime, g: &Garage, endpoint: &str, key: &str) -> Vec<u8> {
    let s = s3(g, endpoint);
    rt.block_on(async { s.get(&ObjPath::from(key)).await?.bytes().await })
        .unwrap_or_else(|e| panic!("GET {key} via {endpoint}: {e}\n{}", g.logs(20)))
        .to_vec()
}

/// An unsigned `GET /bucket/key` to node `n`: the status line and body.
fn anonymous_get(g: &Garage, n: u32, bucket: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", g.s3_port(n))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /{bucket}/probe HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
        g.s3_port(n)
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Waits up to 30 s for `f` to hold, naming `what` if it never does.
fn wait_until(g: &Garage, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{what} after 30 s:\n{}",
            g.logs(20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `garage health` of node `n`: (its stdout, whether it said available).
fn health(g: &Garage, n: u32) -> (String, bool) {
    let o = g.cli_output(n, &["health"]);
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        o.status.success(),
    )
}

/// The `==== HEALTHY NODES ====` part of `garage status` on node `n`.
fn healthy_nodes(g: &Garage, n: u32) -> String {
    let s = g.cli(n, &["status"]);
    s.split("==== FAILED NODES ====")
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn three_nodes_serve_s3_and_survive_losing_one() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = Instant::now();
    let g = Garage::start();
    eprintln!("garage: cluster started in {:.1?}", t.elapsed());

    let eps = g.endpoints();
    assert_eq!(eps.len(), 3);
    assert_eq!(g.endpoint(), eps[0]);
    for (i, ep) in eps.iter().enumerate() {
        assert_eq!(*ep, format!("http://127.0.0.1:{}", g.s3_port(i as u32 + 1)));
    }
    assert_eq!(g.bucket(), "strata");
    assert!(g.access_key().starts_with("GK"), "{}", g.access_key());
    assert_eq!(g.secret_key().len(), 64);
    let env = g.env();
    assert!(
        env.contains(&("AWS_REGION".into(), "garage".into())),
        "{env:?}"
    );
    assert!(env.contains(&("AWS_ACCESS_KEY_ID".into(), g.access_key().into())));
    assert!(env.contains(&("AWS_SECRET_ACCESS_KEY".into(), g.secret_key().into())));

    // Every node answers S3 requests (refusing an unsigned one, in region garage).
    for n in 1..=3 {
        let r = anonymous_get(&g, n, g.bucket());
        let status = r.lines().next().unwrap_or_default();
        assert!(status.contains(" 403 "), "node {n}: {r}");
        assert!(r.contains("<Code>AccessDenied</Code>"), "node {n}: {r}");
        assert!(r.contains("<Region>garage</Region>"), "node {n}: {r}");
    }

    // An object written through node 1 reads back through every node.
    let t = Instant::now();
    let a = common::noise(3 << 20, 1);
    put(&rt, &g, &eps[0], "layers/a", &a);
    for ep in &eps {
        assert!(get(&rt, &g, ep, "layers/a") == a, "layers/a via {ep}");
    }
    eprintln!("garage: 3 MiB PUT + 3 GETs in {:.1?}", t.elapsed());

    // The bucket exists (holding that object), and our key may read, write and own it.
    let info = g.cli(1, &["bucket", "info", "strata"]);
    assert!(info.contains("Global alias:    strata"), "{info}");
    let perms = info
        .lines()
        .find(|l| l.contains(g.access_key()))
        .unwrap_or_else(|| panic!("key {} not on the bucket:\n{info}", g.access_key()));
    assert!(perms.trim_start().starts_with("RWO"), "{perms}");

    // All three nodes up, every partition fully replicated.
    let (h, ok) = health(&g, 1);
    assert!(
        ok && h.contains("HEALTHY") && h.contains("Storage nodes up:          3"),
        "{h}"
    );

    // Kill node 2: nodes 1 and 3 notice, and keep a quorum (2 of 3).
    let t = Instant::now();
    g.kill_node(2);
    let id2 = &g.node_id(2)[..16];
    wait_until(&g, "nodes 1 and 3 do not see node 2 failed", || {
        [1, 3].iter().all(|&n| !healthy_nodes(&g, n).contains(id2))
    });
    eprintln!("garage: node 2's failure seen in {:.1?}", t.elapsed());
    for n in [1, 3] {
        let (h, ok) = health(&g, n);
        assert!(ok, "node {n} reports the cluster unavailable:\n{h}");
        assert!(h.contains("DEGRADED"), "node {n}:\n{h}");
        assert!(h.contains("Storage nodes up:          2"), "node {n}:\n{h}");
        assert!(
            h.contains("Partitions with quorum:    256"),
            "node {n}:\n{h}"
        );
        let up = healthy_nodes(&g, n);
        for m in [1, 3] {
            assert!(
                up.contains(&g.node_id(m)[..16]),
                "node {n}, node {m}:\n{up}"
            );
        }
        // Quorum reads still work without node 2.
        let info = g.cli(n, &["bucket", "info", "strata"]);
        assert!(info.contains(g.access_key()), "{info}");
    }
    // And S3 writes and reads too.
    let t = Instant::now();
    let b = common::noise(1 << 20, 2);
    put(&rt, &g, &eps[2], "layers/b", &b);
    assert!(get(&rt, &g, &eps[0], "layers/b") == b);
    assert!(get(&rt, &g, &eps[2], "layers/a") == a);
    eprintln!(
        "garage: with a node down, 1 MiB PUT + 2 GETs in {:.1?}",
        t.elapsed()
    );

    // Start it again: it rejoins and the cluster is whole again.
    let t = Instant::now();
    g.start_node(2);
    eprintln!("garage: node 2 restarted in {:.1?}", t.elapsed());
    // It serves what was written while it was down (a quorum read).
    assert!(get(&rt, &g, &eps[1], "layers/b") == b);
    wait_until(&g, "the cluster is not healthy again", || {
        (1..=3).all(|n| {
            let (h, ok) = health(&g, n);
            ok && h.contains("Cluster health:            HEALTHY")
        })
    });
    eprintln!(
        "garage: healthy again {:.1?} after restarting node 2",
        t.elapsed()
    );

    // Closing the client's idle connections first lets the nodes shut down
    // gracefully at once.
    drop(rt);
    let t = Instant::now();
    drop(g);
    eprintln!("garage: stopped in {:.1?}", t.elapsed());
}
