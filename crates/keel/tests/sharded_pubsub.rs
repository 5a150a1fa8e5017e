//! Sharded pub/sub on a Redis Cluster (`[redis] sharded_pubsub = true`): publishes are
//! `SPUBLISH` to the channel's shard, subscriptions `SSUBSCRIBE` on the master owning each
//! channel's slot (Redis counts them there, and none as classic subscribers); a pattern
//! subscription is refused naming the setting; with the setting off, classic pub/sub as before.
//! On the local cluster of the test process (3 masters, 3 replicas), stopped when it ends.

#[path = "support/redis_cluster.rs"]
mod redis_cluster;

use std::time::Duration;

use futures::StreamExt;
use keel::backend::RedisSettings;
use keel::{Backend, Events};
use redis_cluster::LocalCluster;
use serde_json::json;

async fn backend(cluster: &LocalCluster, sharded: bool) -> Backend {
    Backend::redis(RedisSettings {
        url: cluster.url(),
        prefix: format!("ksp-{}", uuid::Uuid::new_v4().simple()),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: sharded,
    })
    .await
    .expect("the cluster answers")
}

/// The master serving `channel`'s slot, by port.
fn owner(cluster: &LocalCluster, channel: &str) -> u16 {
    cluster.master_of(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_pubsub_delivers_on_each_channels_shard_and_refuses_patterns() {
    let cluster = tokio::task::spawn_blocking(LocalCluster::shared)
        .await
        .unwrap();
    let b = backend(cluster, true).await;
    let events = Events::new(&b);
    let user = uuid::Uuid::new_v4().simple().to_string();
    // Channels whose slots fall on different masters.
    let channels: Vec<String> = (0..6)
        .map(|i| keel::pubsub::channels::jobs_completed(&format!("{user}-{i}")))
        .collect();
    let owners: std::collections::BTreeSet<u16> =
        channels.iter().map(|c| owner(cluster, c)).collect();
    assert!(owners.len() >= 2, "the channels span several masters");
    let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
    let mut sub = events.subscribe(&refs, &[]).await.unwrap();
    for c in &channels {
        let port = owner(cluster, c);
        let sharded = cluster.cli(port, &["pubsub", "shardnumsub", c]);
        assert!(
            sharded.lines().nth(1).map(str::trim) == Some("1"),
            "{c}: one sharded subscriber on its master {port}: {sharded:?}"
        );
        let classic = cluster.cli(port, &["pubsub", "numsub", c]);
        assert_eq!(classic.lines().nth(1).map(str::trim), Some("0"), "{c}");
    }
    for (i, c) in channels.iter().enumerate() {
        let n = events.publish(c, &json!({"i": i})).await.unwrap();
        assert_eq!(n, 1, "{c}: SPUBLISH reached its one subscriber");
    }
    let mut got = Vec::new();
    for _ in &channels {
        let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("a message within 5 s")
            .expect("the subscription is open");
        assert_eq!(m.pattern, None);
        got.push((m.channel, m.data["i"].as_u64().unwrap() as usize));
    }
    got.sort_by_key(|(_, i)| *i);
    let want: Vec<(String, usize)> = channels.iter().cloned().zip(0..).collect();
    assert_eq!(got, want);
    // Patterns never hear sharded publishes: refused, naming the setting.
    let pattern = format!("jobs:*:{user}-*");
    match events.subscribe(&[], &[&pattern]).await {
        Err(keel::Error::InvalidInput { field, .. }) => assert_eq!(field, "redis.sharded_pubsub"),
        Err(e) => panic!("not invalid input: {e}"),
        Ok(_) => panic!("a pattern subscription with sharded pub/sub"),
    }
    // A dropped subscription unsubscribes on its shard.
    drop(sub);
    let c = &channels[0];
    let port = owner(cluster, c);
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = cluster.cli(port, &["pubsub", "shardnumsub", c]);
        if left.lines().nth(1).map(str::trim) == Some("0") {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "still subscribed: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_setting_pubsub_on_a_cluster_stays_classic() {
    let cluster = tokio::task::spawn_blocking(LocalCluster::shared)
        .await
        .unwrap();
    let b = backend(cluster, false).await;
    let events = Events::new(&b);
    let c = keel::pubsub::channels::jobs_completed(&uuid::Uuid::new_v4().simple().to_string());
    let mut sub = events.subscribe(&[&c], &[]).await.unwrap();
    let port = owner(cluster, &c);
    let sharded = cluster.cli(port, &["pubsub", "shardnumsub", &c]);
    assert_eq!(sharded.lines().nth(1).map(str::trim), Some("0"));
    events.publish(&c, &json!({"x": 1})).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.data, json!({"x": 1}));
}
