//! A local Redis Cluster of the test process's own: 3 masters and 3 replicas, `redis-server`
//! processes on spare loopback ports (never the shared 6379), made one with
//! `redis-cli --cluster create … --cluster-replicas 1`.
//!
//! [`LocalCluster::shared`] starts one per test process, on first use, for the tests that only
//! need a cluster (each under a key prefix of its own). A watchdog process stops its nodes, by
//! their pids, when the test process ends, however it ends. [`LocalCluster::start`] makes a
//! private one (a failover test's), stopped when dropped; [`LocalCluster::start_secure`] one
//! that speaks only TLS (a self-signed certificate made with `openssl`) and wants a password.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct LocalCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    dir: PathBuf,
    /// `redis-cli`'s flags for this cluster (TLS and the password on a secure one).
    cli_flags: Vec<String>,
    /// The password of a secure cluster.
    password: Option<String>,
}

/// Six ports whose cluster bus ports (port + 10000) are free too.
fn spare_ports() -> Vec<u16> {
    let mut ports = Vec::new();
    while ports.len() < 6 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 55_000 && !ports.contains(&p) && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        {
            ports.push(p);
        }
    }
    ports
}

/// Whether every node listens on its port within `limit` (`false` at once if one exited).
fn all_listening(ports: &[u16], children: &mut [std::process::Child], limit: Duration) -> bool {
    let until = Instant::now() + limit;
    for p in ports {
        while std::net::TcpStream::connect(("127.0.0.1", *p)).is_err() {
            let exited = children
                .iter_mut()
                .any(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    true
}

fn cli(flags: &[String], port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(flags)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli must be installed (see README)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The port of a node's address as `CLUSTER NODES` or `INFO` shows it
/// (`127.0.0.1:7000@17000`, `127.0.0.1:7000`).
pub fn port_of(addr: &str) -> u16 {
    addr.split('@')
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
}

impl LocalCluster {
    /// The process's shared cluster, started on first use.
    pub fn shared() -> &'static LocalCluster {
        static SHARED: OnceLock<LocalCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let c = LocalCluster::start();
            c.watch_parent();
            c
        })
    }

    /// Starts a cluster and waits until every node says `cluster_state:ok`.
    pub fn start() -> LocalCluster {
        LocalCluster::start_with(None)
    }

    /// A cluster that speaks only TLS (nodes, cluster bus and replication; clients are not
    /// asked for certificates) and wants `password` (`requirepass`, `masterauth`).
    pub fn start_secure(password: &str) -> LocalCluster {
        LocalCluster::start_with(Some(password))
    }

    fn start_with(password: Option<&str>) -> LocalCluster {
        let dir =
            std::env::temp_dir().join(format!("keel-cluster-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let mut cli_flags = Vec::new();
        if let Some(pw) = password {
            let made = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args([
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl must be installed for the TLS cluster");
            assert!(made.success(), "openssl made no certificate");
            cli_flags = vec![
                "--tls".into(),
                "--cacert".into(),
                cert.display().to_string(),
                "-a".into(),
                pw.into(),
                "--no-auth-warning".into(),
            ];
        }
        // A port picked free can be taken before its node binds it (another test's outgoing
        // connection gets it from the same ephemeral range): then the cluster starts again
        // on other ports.
        let mut started = None;
        for _ in 0..3 {
            let ports = spare_ports();
            let mut children = Vec::new();
            for p in &ports {
                let port = p.to_string();
                let plain = ["--port", port.as_str()];
                let secure = password.map(|pw| {
                    vec![
                        "--port".to_string(),
                        "0".into(),
                        "--tls-port".into(),
                        port.clone(),
                        "--tls-cluster".into(),
                        "yes".into(),
                        "--tls-replication".into(),
                        "yes".into(),
                        "--tls-cert-file".into(),
                        cert.display().to_string(),
                        "--tls-key-file".into(),
                        key.display().to_string(),
                        "--tls-ca-cert-file".into(),
                        cert.display().to_string(),
                        "--tls-auth-clients".into(),
                        "no".into(),
                        "--requirepass".into(),
                        pw.into(),
                        "--masterauth".into(),
                        pw.into(),
                    ]
                });
                let mut cmd = Command::new("redis-server");
                match &secure {
                    Some(args) => cmd.args(args),
                    None => cmd.args(plain),
                };
                let child = cmd
                    .args([
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--cluster-enabled",
                        "yes",
                        // Long enough that a node slowed by a busy 2-core machine is not failed over
                        // (an automatic failover drops the writes not yet replicated, by design).
                        "--cluster-node-timeout",
                        "5000",
                        // A replica's first full sync at once, not after the default 5 s wait for
                        // other replicas (a test may fail a master over right after the start).
                        "--repl-diskless-sync-delay",
                        "0",
                        "--cluster-config-file",
                        &format!("nodes-{p}.conf"),
                        "--dir",
                        dir.to_str().unwrap(),
                        "--logfile",
                        &format!("node-{p}.log"),
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server must be installed (see README)");
                children.push(child);
            }
            if all_listening(&ports, &mut children, Duration::from_secs(10)) {
                started = Some((ports, children));
                break;
            }
            for mut c in children {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let (ports, children) =
            started.expect("the cluster's nodes did not start on 3 sets of ports");
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(&cli_flags)
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli must be installed (see README)");
        let cluster = LocalCluster {
            ports,
            children,
            dir,
            cli_flags,
            password: password.map(str::to_string),
        };
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    }

    /// Waits until every node says the cluster is ok, all slots are served and every replica
    /// is attached and synced.
    pub fn wait_ok(&self, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            // Every node sees the cluster ok, every slot served, and every replica attached.
            let ok = self.ports.iter().all(|p| {
                let info = self.cli(*p, &["cluster", "info"]);
                let nodes = self.cli(*p, &["cluster", "nodes"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && nodes
                        .lines()
                        .filter(|l| l.split(' ').nth(2).is_some_and(|f| f.contains("slave")))
                        .count()
                        == self.ports.len() / 2
            });
            // And every replica's first sync done: a master failed over before its replica
            // synced hands its slots to an empty node.
            let ok = ok
                && self.ports.iter().all(|p| {
                    let repl = self.cli(*p, &["info", "replication"]);
                    repl.contains("role:master")
                        || (repl.contains("master_link_status:up")
                            && repl.contains("master_sync_in_progress:0"))
                });
            if ok {
                return;
            }
            assert!(Instant::now() < until, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis+cluster://` with every node as a seed (on a secure cluster
    /// `rediss+cluster://:<password>@…#insecure`: the certificate is self-signed).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        match &self.password {
            None => format!("redis+cluster://{}", hosts.join(",")),
            Some(pw) => format!("rediss+cluster://:{pw}@{}#insecure", hosts.join(",")),
        }
    }

    /// The ports of the nodes that are masters now.
    pub fn masters(&self) -> Vec<u16> {
        self.ports
            .iter()
            .copied()
            .filter(|p| self.cli(*p, &["role"]).starts_with("master"))
            .collect()
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`: a hash tag's content when the key has one).
    pub fn slot_of(&self, key: &str) -> u16 {
        self.cli(self.ports[0], &["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a slot")
    }

    /// The master serving `slot` now and one of its replicas (when it has one), by port.
    pub fn master_and_replica(&self, slot: u16) -> (u16, Option<u16>) {
        let nodes = self.cli(self.ports[0], &["cluster", "nodes"]);
        let lines: Vec<Vec<&str>> = nodes.lines().map(|l| l.split(' ').collect()).collect();
        let master = lines
            .iter()
            .find(|f| {
                f.len() > 8
                    && f[2].contains("master")
                    && f[8..].iter().any(|r| {
                        let (a, b) = r.split_once('-').unwrap_or((r, r));
                        matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
                    })
            })
            .expect("a master serves the slot");
        let replica = lines
            .iter()
            .find(|f| f.len() > 3 && f[2].contains("slave") && f[3] == master[0]);
        (port_of(master[1]), replica.map(|r| port_of(r[1])))
    }

    /// The master serving `key`'s slot now, by port.
    pub fn master_of(&self, key: &str) -> u16 {
        self.master_and_replica(self.slot_of(key)).0
    }

    /// Runs a `redis-cli` command on one node.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        cli(&self.cli_flags, port, args)
    }

    /// The last `n` lines of the log of the node on `port`.
    pub fn log_tail(&self, port: u16, n: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("node-{port}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The pid of the node on `port`.
    pub fn pid(&self, port: u16) -> u32 {
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        self.children[i].id()
    }

    /// Stops the nodes when this process ends: a shell that waits for the process to go, then
    /// kills each node by its pid and removes the nodes' directory.
    fn watch_parent(&self) {
        let pids: Vec<String> = self.children.iter().map(|c| c.id().to_string()).collect();
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill -9 {pids} 2>/dev/null; rm -rf '{dir}'",
            parent = std::process::id(),
            pids = pids.join(" "),
            dir = self.dir.display()
        );
        // Not waited for: it outlives this process on purpose.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh");
    }

    fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
