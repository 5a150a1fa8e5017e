//! What a Redis URL names: one node, or a Redis Cluster by its seed nodes.
//!
//! - `redis://[user:password@]host:port[/db]` and `rediss://…` (TLS): one node.
//! - `redis+cluster://[user:password@]host:port[,host:port…]` and `rediss+cluster://…`: a
//!   cluster, reached through any of the seeds (each becomes `redis://[user:password@]host:port`
//!   or `rediss://…`, carrying the same credentials, query and fragment — `#insecure` skips
//!   TLS certificate checks, as on one node). A cluster has only database 0.
//!
//! A node URL that turns out to name a cluster node is the connecting code's business (it asks
//! the node and connects to the cluster through it).

/// One node or a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis (a standalone server, or a primary).
    Node(String),
    /// A Redis Cluster: the seed nodes' URLs.
    Cluster(Vec<String>),
}

/// Parses `url` (see the module's forms); the error says what is wrong, without the password.
pub fn parse(url: &str) -> Result<RedisTarget, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(
            "must start with redis://, rediss://, redis+cluster:// or rediss+cluster://".into(),
        );
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, format!("#{f}")),
        None => (rest, String::new()),
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let hosts: Vec<&str> = hosts.split(',').map(str::trim).collect();
    if hosts.iter().any(|h| h.is_empty()) {
        return Err("names an empty host".into());
    }
    let cluster = match scheme {
        "redis" | "rediss" => false,
        "redis+cluster" | "rediss+cluster" => true,
        _ => {
            return Err(
                "must start with redis://, rediss://, redis+cluster:// or rediss+cluster://".into(),
            )
        }
    };
    if !cluster {
        if hosts.len() > 1 {
            return Err(
                "names several hosts: a Redis Cluster's seeds go in a redis+cluster:// URL".into(),
            );
        }
        return Ok(RedisTarget::Node(url.to_string()));
    }
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, format!("?{q}")),
        None => (tail, String::new()),
    };
    let db = path.trim_matches('/');
    if !(db.is_empty() || db == "0") {
        return Err(format!(
            "selects database {db}: a Redis Cluster has only database 0"
        ));
    }
    let node_scheme = scheme.trim_end_matches("+cluster");
    Ok(RedisTarget::Cluster(
        hosts
            .iter()
            .map(|h| format!("{node_scheme}://{userinfo}{h}{query}{fragment}"))
            .collect(),
    ))
}

/// The URL of a cluster with these seeds (`redis+cluster://a,b`): the one form a configuration
/// carries either way. Seeds are `host:port` or node URLs (`redis://…`, `rediss://…`); TLS when
/// the first seed says `rediss://`, and the first seed's credentials.
pub fn cluster_url(seeds: &[String]) -> Result<String, String> {
    let Some(first) = seeds.first() else {
        return Err("names no seed node".into());
    };
    let tls = first.starts_with("rediss://");
    let userinfo = first
        .split_once("://")
        .and_then(|(_, r)| r.split('/').next())
        .and_then(|a| a.rfind('@').map(|at| a[..=at].to_string()))
        .unwrap_or_default();
    let mut hosts = Vec::new();
    for s in seeds {
        let authority = match s.split_once("://") {
            Some((scheme, r)) => {
                if scheme != "redis" && scheme != "rediss" {
                    return Err(format!("seed {s:?} must be host:port or a redis:// URL"));
                }
                r.split(['/', '?']).next().unwrap_or("")
            }
            None => s.as_str(),
        };
        let host = authority.rsplit('@').next().unwrap_or("");
        if host.is_empty() {
            return Err("names an empty seed".into());
        }
        hosts.push(host.to_string());
    }
    let scheme = if tls {
        "rediss+cluster"
    } else {
        "redis+cluster"
    };
    Ok(format!("{scheme}://{userinfo}{}", hosts.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_and_cluster_forms() {
        assert_eq!(
            parse("redis://127.0.0.1:6379/2").unwrap(),
            RedisTarget::Node("redis://127.0.0.1:6379/2".into())
        );
        assert_eq!(
            parse("rediss+cluster://u:p@a:7000,b:7001?insecure").unwrap(),
            RedisTarget::Cluster(vec![
                "rediss://u:p@a:7000?insecure".into(),
                "rediss://u:p@b:7001?insecure".into()
            ])
        );
        assert_eq!(
            parse("rediss+cluster://:pw@a:7000,b:7001/#insecure").unwrap(),
            RedisTarget::Cluster(vec![
                "rediss://:pw@a:7000#insecure".into(),
                "rediss://:pw@b:7001#insecure".into()
            ])
        );
        assert_eq!(
            parse("redis+cluster://a:1/0").unwrap(),
            RedisTarget::Cluster(vec!["redis://a:1".into()])
        );
        for bad in [
            "redis://a:1,b:2",
            "redis+cluster://a:1/3",
            "http://a",
            "redis+cluster://a:1,,b:2",
            "a:1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seeds_make_one_url() {
        let seeds = ["127.0.0.1:7000".to_string(), "127.0.0.1:7001".into()];
        assert_eq!(
            cluster_url(&seeds).unwrap(),
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
        );
        let seeds = ["rediss://:pw@h:1".to_string(), "h:2".into()];
        let url = cluster_url(&seeds).unwrap();
        assert_eq!(url, "rediss+cluster://:pw@h:1,h:2");
        assert_eq!(
            parse(&url).unwrap(),
            RedisTarget::Cluster(vec!["rediss://:pw@h:1".into(), "rediss://:pw@h:2".into()])
        );
        assert!(cluster_url(&[]).is_err());
    }
}
