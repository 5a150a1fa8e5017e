//! Keel's own connections (Keel's engine, `keel-native`), on one Redis or on a Redis Cluster,
//! and the cluster helpers the toolkit uses too.
//!
//! On one node: a `ConnectionManager` (reconnects by itself) shared by producers, admin calls
//! and workers' cycles, and a plain multiplexed connection of its own for each blocking read.
//! On a cluster: redis-rs's cluster connection, which routes each command and script call to
//! the master owning its keys' slot (every key of a queue shares its `{queue}` hash tag, so
//! every script's keys are on one master), follows `MOVED`/`ASK` and refreshes the slot map
//! (after a failover, too); a blocking read gets a cluster connection of its own. Commands that
//! name no key and must see every master (`SCAN`) go to each master in turn
//! ([`Conn::masters`]).

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use keel_core::redis_url::{self, RedisTarget};
use keel_core::{Error, Result};

/// What the engine connects with (made once per engine: the size difference does not matter).
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Client {
    Node(redis::Client),
    Cluster(ClusterClient),
}

/// One connection (cheap to clone: clones share it).
#[derive(Clone)]
pub enum Conn {
    Managed(ConnectionManager),
    Plain(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Client {
    /// The client for `url` (one node, or a cluster by its seeds): the error names the key.
    pub fn open(url: &str) -> Result<Client> {
        let invalid = |m: String| {
            Error::invalid(
                "redis.url",
                format!("{}: {m}", keel_core::secrets::redact_url(url)),
            )
        };
        match redis_url::parse(url).map_err(invalid)? {
            RedisTarget::Node(u) => redis::Client::open(u)
                .map(Client::Node)
                .map_err(|e| invalid(e.to_string())),
            RedisTarget::Cluster(seeds) => Client::cluster(&seeds).map_err(invalid),
        }
    }

    pub fn cluster(seeds: &[String]) -> std::result::Result<Client, String> {
        ClusterClient::builder(seeds.iter().map(String::as_str))
            .build()
            .map(Client::Cluster)
            .map_err(|e| e.to_string())
    }

    /// The shared connection (no client-side reply timeout: the engine bounds its calls, and
    /// a script that ran past a client's timeout has still run).
    pub async fn shared(&self) -> redis::RedisResult<Conn> {
        match self {
            Client::Node(c) => {
                let config = redis::aio::ConnectionManagerConfig::new().set_response_timeout(None);
                ConnectionManager::new_with_config(c.clone(), config)
                    .await
                    .map(Conn::Managed)
            }
            Client::Cluster(c) => c.get_async_connection().await.map(Conn::Cluster),
        }
    }

    /// A connection of its own, for blocking reads.
    pub async fn dedicated(&self) -> redis::RedisResult<Conn> {
        match self {
            Client::Node(c) => {
                let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
                c.get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Conn::Plain)
            }
            Client::Cluster(c) => c.get_async_connection().await.map(Conn::Cluster),
        }
    }
}

impl Conn {
    /// Every master's address (`host`, `port`); `None` on one node (where a command goes to the
    /// one server).
    pub async fn masters(&mut self) -> redis::RedisResult<Option<Vec<(String, u16)>>> {
        let Conn::Cluster(c) = self else {
            return Ok(None);
        };
        masters(c).await.map(Some)
    }

    /// `cmd` on the master at `addr` (a cluster), or on the one server.
    pub async fn on(
        &mut self,
        addr: Option<&(String, u16)>,
        cmd: &Cmd,
    ) -> redis::RedisResult<Value> {
        match (self, addr) {
            (Conn::Cluster(c), Some(addr)) => on_node(c, addr, cmd).await,
            (conn, _) => cmd.query_async(conn).await,
        }
    }
}

/// Every master of the cluster now (`CLUSTER SHARDS`; failed nodes left out): (`host`, `port`).
pub async fn masters(c: &mut ClusterConnection) -> redis::RedisResult<Vec<(String, u16)>> {
    {
        let shards: Vec<Value> = redis::cmd("CLUSTER").arg("SHARDS").query_async(c).await?;
        let mut out = Vec::new();
        for shard in shards {
            for node in field(&shard, "nodes").map(list).unwrap_or_default() {
                let text = |k: &str| {
                    field(node, k).and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                };
                if text("role").as_deref() != Some("master")
                    || text("health").as_deref() == Some("fail")
                {
                    continue;
                }
                let port =
                    field(node, "port").and_then(|v| redis::from_redis_value_ref::<u16>(v).ok());
                if let (Some(ip), Some(port)) = (text("ip"), port) {
                    out.push((ip, port));
                }
            }
        }
        Ok(out)
    }
}

/// The (`host`, `port`) a node URL names.
pub fn node_addr(url: &str) -> Option<(String, u16)> {
    let info = redis::IntoConnectionInfo::into_connection_info(url).ok()?;
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => Some((host.clone(), *port)),
        redis::ConnectionAddr::TcpTls { host, port, .. } => Some((host.clone(), *port)),
        _ => None,
    }
}

/// `cmd` on the node at `addr` of the cluster.
pub async fn on_node(
    c: &mut ClusterConnection,
    (host, port): &(String, u16),
    cmd: &Cmd,
) -> redis::RedisResult<Value> {
    c.route_command(
        cmd.clone(),
        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.clone(),
            port: *port,
        }),
    )
    .await
}

/// A field of a RESP map or flat key-value array (`CLUSTER SHARDS` answers either).
fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Map(pairs) => pairs.iter().find_map(|(k, v)| {
            (redis::from_redis_value_ref::<String>(k).ok().as_deref() == Some(key)).then_some(v)
        }),
        Value::Array(items) => items.chunks(2).find_map(|kv| match kv {
            [k, v] if redis::from_redis_value_ref::<String>(k).ok().as_deref() == Some(key) => {
                Some(v)
            }
            _ => None,
        }),
        _ => None,
    }
}

fn list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        _ => Vec::new(),
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Managed(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Managed(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Plain(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Managed(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
