//! The routing table: the routes of one version of the configuration,
//! compiled for lookup, and the clusters' clients they send calls to.
//!
//! A call takes the table current when it starts and keeps it (an `Arc`)
//! until it ends, so a reload never moves a call in flight.

use std::collections::HashMap;

use sinew_client::{Client, ClientConfig, ClientError, bulkhead::BulkheadConfig};
use sinew_core::tls::ClientTlsConfig;

use crate::{
    config::{ClusterConfig, GatewayConfig, Match, OverrideWhen, RouteConfig},
    contracts::Contracts,
};

/// One upstream cluster: its settings and its resilient client.
#[derive(Clone)]
pub(crate) struct Cluster {
    pub(crate) config: ClusterConfig,
    pub(crate) client: Client,
    /// The client of shadow copies, for a cluster some route shadows to:
    /// its own connections, breakers and bulkhead, and no retries, so
    /// that copies never take what real calls to the cluster need.
    pub(crate) shadow: Option<Client>,
}

/// One compiled route.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) config: RouteConfig,
    /// The sum of the split's weights.
    total_weight: u64,
    /// Its name in the rate limiter: its match, which is unique.
    pub(crate) key: String,
}

/// Routes and clusters of one configuration version.
pub(crate) struct Table {
    pub(crate) version: u64,
    routes: Vec<Route>,
    by_method: HashMap<String, usize>,
    by_service: HashMap<String, usize>,
    /// Longest package first.
    packages: Vec<(String, usize)>,
    any: Option<usize>,
    pub(crate) clusters: HashMap<String, Cluster>,
}

/// The cluster a call goes to, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice<'a> {
    /// An override matched.
    Override(&'a str),
    /// The weighted choice.
    Weighted(&'a str),
}

impl<'a> Choice<'a> {
    /// The cluster's name.
    pub(crate) fn cluster(self) -> &'a str {
        match self {
            Choice::Override(c) | Choice::Weighted(c) => c,
        }
    }
}

// === impl Table ===

impl Table {
    /// Compiles `config`, reusing the clients of `previous` for clusters
    /// whose settings did not change (their connections, breakers and
    /// bulkheads carry on).
    pub(crate) async fn build(
        config: &GatewayConfig,
        contracts: &Contracts,
        previous: Option<&Table>,
        version: u64,
    ) -> Result<Self, ClientError> {
        let mut clusters = HashMap::new();
        for (name, cluster) in &config.clusters {
            let shadowed = config
                .routes
                .iter()
                .any(|route| route.shadow.as_ref() == Some(name));
            let reused = previous
                .and_then(|table| table.clusters.get(name))
                .filter(|old| old.config == *cluster && old.shadow.is_some() == shadowed)
                .cloned();
            let cluster = match reused {
                Some(cluster) => cluster,
                None => {
                    let settings = client_config(cluster, config.settings.seed);
                    let shadow = if shadowed {
                        Some(
                            Client::connect_methods(
                                contracts.methods(),
                                settings.clone().retry(None).retry_throttling(None),
                            )
                            .await?,
                        )
                    } else {
                        None
                    };
                    Cluster {
                        config: cluster.clone(),
                        client: Client::connect_methods(contracts.methods(), settings).await?,
                        shadow,
                    }
                }
            };
            clusters.insert(name.clone(), cluster);
        }
        let mut table = Self {
            version,
            routes: Vec::new(),
            by_method: HashMap::new(),
            by_service: HashMap::new(),
            packages: Vec::new(),
            any: None,
            clusters,
        };
        for (index, route) in config.routes.iter().enumerate() {
            match &route.matches {
                Match::Any => table.any = Some(index),
                Match::Package(p) => table.packages.push((p.clone(), index)),
                Match::Service(s) => {
                    table.by_service.insert(s.clone(), index);
                }
                Match::Method(m) => {
                    table.by_method.insert(m.clone(), index);
                }
            }
            table.routes.push(Route {
                config: route.clone(),
                total_weight: route.split.iter().map(|(_, w)| u64::from(*w)).sum(),
                key: format!("{:?}", route.matches),
            });
        }
        table
            .packages
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Ok(table)
    }

    /// The route of a call to `path` (`/package.Service/Method`): the
    /// method's, else its service's, else its package's (the longest
    /// matching), else `*`'s.
    pub(crate) fn route(&self, path: &str) -> Option<&Route> {
        if let Some(&index) = self.by_method.get(path) {
            return Some(&self.routes[index]);
        }
        let service = path.strip_prefix('/')?.split_once('/')?.0;
        if let Some(&index) = self.by_service.get(service) {
            return Some(&self.routes[index]);
        }
        let package = service.rsplit_once('.').map_or("", |(p, _)| p);
        self.packages
            .iter()
            .find(|(prefix, _)| {
                package == prefix
                    || package
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            })
            .map(|&(_, index)| index)
            .or(self.any)
            .map(|index| &self.routes[index])
    }
}

// === impl Route ===

impl Route {
    /// Where a call goes: the first override it matches, else a cluster
    /// drawn by weight with `draw` (uniform in `[0, 1)`).
    pub(crate) fn choose(
        &self,
        headers: &http::HeaderMap,
        subject: Option<&str>,
        draw: f64,
    ) -> Choice<'_> {
        for rule in &self.config.overrides {
            let hit = match &rule.when {
                OverrideWhen::Header { name, value } => {
                    headers.get(name.as_str()).is_some_and(|have| match value {
                        Some(want) => have.as_bytes() == want.as_bytes(),
                        None => true,
                    })
                }
                OverrideWhen::Principal(want) => subject == Some(want.as_str()),
            };
            if hit {
                return Choice::Override(&rule.cluster);
            }
        }
        let split = &self.config.split;
        if split.len() == 1 {
            return Choice::Weighted(&split[0].0);
        }
        // The draw scaled to the total weight picks the cluster whose
        // share of [0, total) it falls in.
        let mut point = (draw * self.total_weight as f64) as u64;
        for (cluster, weight) in split {
            let weight = u64::from(*weight);
            if point < weight {
                return Choice::Weighted(cluster);
            }
            point -= weight;
        }
        // Rounding at the top end.
        let last = split
            .iter()
            .rev()
            .find(|(_, w)| *w > 0)
            .unwrap_or(&split[0]);
        Choice::Weighted(&last.0)
    }
}

/// The client settings of a cluster.
fn client_config(cluster: &ClusterConfig, seed: Option<u64>) -> ClientConfig {
    let mut config = ClientConfig::endpoints(cluster.endpoints.iter().cloned());
    if let Some(timeout) = cluster.timeout {
        config = config.timeout(timeout);
    }
    if let Some(max) = cluster.max_in_flight {
        config = config.bulkhead(BulkheadConfig {
            max_concurrent: max,
            ..BulkheadConfig::default()
        });
    }
    if !cluster.retries {
        config = config.retry(None);
    }
    if cluster.tls_ca.is_some() || cluster.tls_cert.is_some() {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &cluster.tls_ca {
            tls = tls.ca(ca);
        }
        if let (Some(cert), Some(key)) = (&cluster.tls_cert, &cluster.tls_key) {
            tls = tls.identity(cert, key);
        }
        if let Some(name) = &cluster.tls_server_name {
            tls = tls.server_name(name);
        }
        config = config.tls(tls);
    }
    if let Some(seed) = seed {
        config = config.seed(seed);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(text: &str) -> Route {
        let config = GatewayConfig::parse(text).unwrap();
        let route = config.routes[0].clone();
        Route {
            total_weight: route.split.iter().map(|(_, w)| u64::from(*w)).sum(),
            key: format!("{:?}", route.matches),
            config: route,
        }
    }

    const SPLIT: &str = r#"
[clusters.legacy]
endpoints = ["http://127.0.0.1:1"]
[clusters.v2]
endpoints = ["http://127.0.0.1:2"]
[[routes]]
match = "shop"
split = { legacy = 95, v2 = 5 }
override = [{ header = "x-canary", value = "1", cluster = "v2" }, { principal = "tester", cluster = "v2" }]
"#;

    #[test]
    fn weights_split_the_draws() {
        let route = route(SPLIT);
        let headers = http::HeaderMap::new();
        assert_eq!(
            route.choose(&headers, None, 0.0),
            Choice::Weighted("legacy")
        );
        assert_eq!(
            route.choose(&headers, None, 0.9499),
            Choice::Weighted("legacy")
        );
        assert_eq!(route.choose(&headers, None, 0.95), Choice::Weighted("v2"));
        assert_eq!(
            route.choose(&headers, None, 0.99999),
            Choice::Weighted("v2")
        );
    }

    #[test]
    fn overrides_win() {
        let route = route(SPLIT);
        let mut headers = http::HeaderMap::new();
        headers.insert("x-canary", "0".parse().unwrap());
        assert_eq!(
            route.choose(&headers, None, 0.0),
            Choice::Weighted("legacy")
        );
        headers.insert("x-canary", "1".parse().unwrap());
        assert_eq!(route.choose(&headers, None, 0.0), Choice::Override("v2"));
        let headers = http::HeaderMap::new();
        assert_eq!(
            route.choose(&headers, Some("tester"), 0.0),
            Choice::Override("v2")
        );
    }
}
