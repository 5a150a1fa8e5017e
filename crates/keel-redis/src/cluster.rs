//! What the toolkit does differently on a Redis Cluster: the commands that must see every
//! master (`SCAN`, `INFO`) run on each master in turn (on one node, on the one server), and
//! pub/sub meets on one node — or, with `sharded_pubsub`, on each channel's shard.

use bullmq::redis_connection::AnyConnection;
use futures::StreamExt;
use keel_core::{Error, PubSubMessage, Result, Subscription};

use crate::convert::map_redis;

use crate::RedisBackend;

impl RedisBackend {
    /// `INFO` of every master with its address (one text, no address, on one node).
    pub(crate) async fn info_of_masters(&self) -> Result<Vec<(Option<(String, u16)>, String)>> {
        let mut texts = Vec::new();
        for target in self.scan_targets().await? {
            let text: String = match (self.inner.conn.connection(), &target) {
                (AnyConnection::Cluster(mut c), Some(addr)) => {
                    let v = self
                        .kv_call("INFO", async move {
                            crate::conn::on_node(&mut c, addr, &redis::cmd("INFO")).await
                        })
                        .await?;
                    redis::from_redis_value(v).map_err(|e| Error::Backend(format!("INFO: {e}")))?
                }
                _ => self.kv_cmd("INFO", redis::cmd("INFO")).await?,
            };
            texts.push((target, text));
        }
        Ok(texts)
    }

    /// Where a `SCAN` must run to see every key: each master of a cluster (`Some`), or the one
    /// server (`None`).
    pub(crate) async fn scan_targets(&self) -> Result<Vec<Option<(String, u16)>>> {
        let AnyConnection::Cluster(mut c) = self.inner.conn.connection() else {
            return Ok(vec![None]);
        };
        let masters = self
            .kv_call("CLUSTER SHARDS", crate::conn::masters(&mut c))
            .await?;
        Ok(masters.into_iter().map(Some).collect())
    }

    /// One `SCAN` step on `target` (see [`Self::scan_targets`]).
    pub(crate) async fn scan_batch(
        &self,
        target: &Option<(String, u16)>,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<String>)> {
        let cmd = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .to_owned();
        match (self.inner.conn.connection(), target) {
            (AnyConnection::Cluster(mut c), Some(addr)) => {
                let v = self
                    .kv_call("SCAN", async move {
                        crate::conn::on_node(&mut c, addr, &cmd).await
                    })
                    .await?;
                redis::from_redis_value(v).map_err(|e| Error::Backend(format!("SCAN: {e}")))
            }
            _ => self.kv_cmd("SCAN", cmd).await,
        }
    }

    /// Where subscriptions connect, tried in turn: the one server, or a cluster's seeds. On a
    /// cluster a subscription on any one node hears every node's publishes (the cluster bus
    /// carries them).
    pub(crate) fn pubsub_clients(&self) -> Vec<redis::Client> {
        match self.inner.conn.try_client() {
            Some(c) => vec![c.clone()],
            None => self
                .inner
                .cluster_seeds
                .iter()
                .filter_map(|s| redis::Client::open(s.as_str()).ok())
                .collect(),
        }
    }

    /// On a cluster, `PUBLISH` on the first seed that answers: every node passes a publish on
    /// to its subscribers but counts only its own, and subscriptions are made there, so the
    /// count is this deployment's receivers. `None` on one node, or when no seed answered (a
    /// seed that is down is skipped, not an outage: the cluster then routes the publish).
    pub(crate) async fn publish_on_first_seed(&self, cmd: &redis::Cmd) -> Option<Result<u64>> {
        let AnyConnection::Cluster(mut c) = self.inner.conn.connection() else {
            return None;
        };
        let timeout = self.inner.settings.command_timeout;
        for addr in self
            .inner
            .cluster_seeds
            .iter()
            .filter_map(|s| crate::conn::node_addr(s))
        {
            let sent = tokio::time::timeout(timeout, crate::conn::on_node(&mut c, &addr, cmd));
            if let Ok(Ok(v)) = sent.await {
                return Some(
                    redis::from_redis_value(v).map_err(|e| Error::Backend(format!("PUBLISH: {e}"))),
                );
            }
        }
        None
    }

    /// Whether pub/sub is sharded here: asked for, and on a cluster.
    pub(crate) fn sharded_pubsub(&self) -> bool {
        self.inner.settings.sharded_pubsub && !self.inner.cluster_seeds.is_empty()
    }

    /// A sharded subscription (`SSUBSCRIBE`): redis-rs's cluster connection sends each
    /// channel's subscription to the master owning its slot, and subscribes again after a
    /// reconnect, a failover or a slot move; messages arrive as RESP3 pushes. Patterns are
    /// refused: a pattern subscription never hears a sharded publish.
    pub(crate) async fn subscribe_sharded(
        &self,
        channels: &[String],
        patterns: &[String],
    ) -> Result<Subscription> {
        if !patterns.is_empty() {
            return Err(Error::invalid(
                "redis.sharded_pubsub",
                "pattern subscriptions hear only classic PUBLISH, which sharded pub/sub never sends: subscribe to exact channels, or turn redis.sharded_pubsub off",
            ));
        }
        let (pushes_tx, mut pushes) = tokio::sync::mpsc::unbounded_channel();
        let client = redis::cluster::ClusterClientBuilder::new(
            self.inner.cluster_seeds.iter().map(String::as_str),
        )
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(pushes_tx)
        .build()
        .map_err(|e| map_redis("SSUBSCRIBE", e))?;
        let timeout = self.inner.settings.command_timeout;
        let subscribed = tokio::time::timeout(timeout, async {
            let mut conn = client.get_async_connection().await?;
            // One call a channel: channels of different slots live on different masters.
            for c in channels {
                conn.ssubscribe(c).await?;
            }
            Ok::<_, redis::RedisError>(conn)
        })
        .await;
        let conn = match subscribed {
            Ok(r) => r.map_err(|e| map_redis("SSUBSCRIBE", e))?,
            Err(_) => {
                return Err(Error::BackendUnavailable(format!(
                    "SSUBSCRIBE: Redis did not answer within {timeout:?}"
                )))
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<PubSubMessage>(1024);
        tokio::spawn(async move {
            // The connection lives as long as the subscription: dropping it unsubscribes.
            let _conn = conn;
            loop {
                let push = tokio::select! {
                    _ = tx.closed() => return,
                    push = pushes.recv() => push,
                };
                let Some(push) = push else { return };
                let (redis::PushKind::SMessage, [channel, payload]) = (&push.kind, &push.data[..])
                else {
                    continue;
                };
                let (Ok(channel), Ok(payload)) = (
                    redis::from_redis_value_ref::<String>(channel),
                    redis::from_redis_value_ref::<Vec<u8>>(payload),
                ) else {
                    continue;
                };
                let message = PubSubMessage {
                    channel,
                    pattern: None,
                    payload,
                };
                if tx.send(message).await.is_err() {
                    return;
                }
            }
        });
        Ok(
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
                .boxed(),
        )
    }
}
