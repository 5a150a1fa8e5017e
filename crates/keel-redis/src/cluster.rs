//! What the toolkit does differently on a Redis Cluster: the commands that must see every
//! master (`SCAN`, `INFO`) run on each master in turn (on one node, on the one server), and
//! pub/sub meets on one node.

use bullmq::redis_connection::AnyConnection;
use keel_core::{Error, Result};

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
}
