//! The server on a real local Redis Cluster (3 masters, 3 replicas, private ports, stopped
//! when the test ends): two instances share a partitioned queue on Keel's engine — an enqueue
//! and a pause through one reach the other's realtime socket — and the Redis page and
//! `GET /api/admin/redis/metrics` show every master as well as the sums.

#[path = "../../keel/tests/support/redis_cluster.rs"]
mod redis_cluster;
mod support;

use axum::http::{Method, StatusCode};
use keel::config::Config;
use serde_json::json;
use support::{App, Db, Web};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_a_cluster_share_queues_realtime_and_show_every_master() {
    two_instances(false).await;
}

/// The same with `sharded_pubsub`: the realtime events travel by `SPUBLISH` to their
/// channel's shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_realtime_over_sharded_pubsub() {
    two_instances(true).await;
}

async fn two_instances(sharded: bool) {
    let cluster = tokio::task::spawn_blocking(redis_cluster::LocalCluster::shared)
        .await
        .unwrap();
    let prefix = format!("kss{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let text = format!(
        "[redis]\nurl = \"{}\"\nprefix = \"{prefix}\"\nsharded_pubsub = {sharded}\n\n[queues.orders]\nengine = \"keel\"\npartitions = 3\n",
        cluster.url()
    );
    let config =
        Config::parse_with(&text, &|_| None, keel_server::config::SECTIONS).expect("config");
    // One toolkit key space for both: realtime events meet on its pub/sub channel.
    let keys = support::unique_keys();
    let backend = || async {
        config
            .backend()
            .await
            .expect("the cluster answers")
            .with_keys(keys.clone())
    };
    let a = App::start(&text, backend().await, Db::Sqlite).await;
    let b = App::start(&text, backend().await, Db::Sqlite).await;

    // Instance A's socket sees what is done through instance B.
    let addr = a.serve_socket().await;
    let url = format!("ws://{addr}/api/owner/realtime?token={}", a.viewer);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let snap = support::ws_next_matching(&mut ws, "snapshot", |m| m["type"] == "snapshot").await;
    assert!(snap.to_string().contains("orders"), "{snap}");
    for i in 0..3 {
        let (s, v) = b
            .call(
                Method::POST,
                "/api/owner/queues/orders/jobs",
                Some(&b.admin),
                Some(json!({"name": "order", "data": {"n": i}})),
            )
            .await;
        assert!(s.is_success(), "{s}: {v}");
    }
    support::ws_next_matching(&mut ws, "3 waiting orders", |m| {
        m["type"] == "queue_stats" && m["queue"] == "orders" && m["stats"]["waiting"] == 3
    })
    .await;
    let (s, _) = b
        .call(
            Method::POST,
            "/api/owner/queues/orders/pause",
            Some(&b.admin),
            None,
        )
        .await;
    assert!(s.is_success());
    support::ws_next_matching(&mut ws, "orders paused", |m| {
        m["queue"] == "orders" && m.to_string().contains("\"paused\":true")
    })
    .await;
    // Both instances count the partitioned queue as one.
    for app in [&a, &b] {
        let (s, v) = app
            .get_json("/api/owner/queues/orders/stats", Some(&app.admin))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(v.to_string().contains("\"waiting\":3"), "{v}");
    }

    // Every master, and the sums over them.
    let (s, info) = a.get_json("/api/admin/redis/metrics", Some(&a.admin)).await;
    assert_eq!(s, StatusCode::OK, "{info}");
    let nodes = info["nodes"].as_array().expect("nodes").clone();
    assert_eq!(nodes.len(), 3, "{info}");
    let mut ports: Vec<u16> = nodes
        .iter()
        .map(|n| redis_cluster::port_of(n["addr"].as_str().unwrap()))
        .collect();
    ports.sort();
    let mut masters = cluster.masters();
    masters.sort();
    assert_eq!(ports, masters);
    let used: u64 = nodes
        .iter()
        .map(|n| n["used_memory"].as_u64().unwrap())
        .sum();
    let total = info["used_memory"].as_u64().unwrap();
    // Read moments apart: equal within a few percent.
    assert!(
        (used as f64 - total as f64).abs() < total as f64 * 0.05,
        "{used} vs {total}"
    );
    let mut web = Web::signed_in(&a, &a.admin).await;
    let page = web.get("/redis").await;
    assert_eq!(page.status, StatusCode::OK);
    for port in &masters {
        assert!(
            page.body
                .contains(&format!("data-node=\"127.0.0.1:{port}\"")),
            "master {port} on the Redis page"
        );
    }
    let _ = ws.close(None).await;
    a.stop().await;
    b.stop().await;
}
