//! Where the endpoints come from: a fixed list, or DNS.

use std::time::Duration;

use http::Uri;

/// The endpoints of a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    /// These endpoints, for good (`http://10.0.0.7:50051`, ...).
    Static(Vec<Uri>),
    /// Every address a DNS name resolves to, re-resolved every `every`.
    /// Calls carry the name as their authority.
    Dns {
        /// `http://orders.internal:50051`: scheme, name and port.
        uri: Uri,
        /// How often to resolve the name again.
        every: Duration,
    },
}

/// Endpoints could not be found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// A target is not a `scheme://host:port` URI.
    #[error("invalid endpoint {target:?}: {reason}")]
    InvalidTarget {
        /// The target as given.
        target: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The DNS name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The name.
        host: String,
        /// Why.
        source: std::io::Error,
    },
    /// There are no endpoints.
    #[error("no endpoints")]
    Empty,
}

/// One endpoint found: a key that stays the same while the endpoint does,
/// the URI to connect to, and the URI calls name as their authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub(crate) key: String,
    pub(crate) connect: Uri,
    pub(crate) origin: Uri,
}

impl Target {
    /// What identifies the endpoint across discoveries (its address).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Where to connect: an address for DNS discovery.
    pub fn connect(&self) -> &Uri {
        &self.connect
    }

    /// What calls name as their authority: the configured URI.
    pub fn origin(&self) -> &Uri {
        &self.origin
    }
}

// === impl Discovery ===

impl Discovery {
    /// A static list from text URIs, checked.
    pub fn fixed<I, S>(targets: I) -> Result<Self, DiscoveryError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let uris = targets
            .into_iter()
            .map(|t| parse(t.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if uris.is_empty() {
            return Err(DiscoveryError::Empty);
        }
        Ok(Self::Static(uris))
    }

    /// A DNS name, re-resolved every `every`.
    pub fn dns(target: &str, every: Duration) -> Result<Self, DiscoveryError> {
        Ok(Self::Dns {
            uri: parse(target)?,
            every,
        })
    }

    /// How often to look again; `None` for a static list.
    pub(crate) fn refresh_every(&self) -> Option<Duration> {
        match self {
            Self::Static(_) => None,
            Self::Dns { every, .. } => Some(*every),
        }
    }

    /// The endpoints now.
    pub(crate) async fn resolve(&self) -> Result<Vec<Target>, DiscoveryError> {
        match self {
            Self::Static(uris) => Ok(uris
                .iter()
                .map(|uri| Target {
                    key: uri.to_string(),
                    connect: uri.clone(),
                    origin: uri.clone(),
                })
                .collect()),
            Self::Dns { uri, .. } => {
                let host = uri.host().unwrap_or_default().to_owned();
                let scheme = uri.scheme_str().unwrap_or("http");
                let port = uri
                    .port_u16()
                    .unwrap_or(if scheme == "https" { 443 } else { 80 });
                let addrs = tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map_err(|source| DiscoveryError::Resolve {
                        host: host.clone(),
                        source,
                    })?;
                let mut targets: Vec<Target> = addrs
                    .filter_map(|addr| {
                        let connect: Uri = format!("{scheme}://{addr}").parse().ok()?;
                        Some(Target {
                            key: addr.to_string(),
                            connect,
                            origin: uri.clone(),
                        })
                    })
                    .collect();
                targets.sort_by(|a, b| a.key.cmp(&b.key));
                targets.dedup_by(|a, b| a.key == b.key);
                if targets.is_empty() {
                    return Err(DiscoveryError::Empty);
                }
                Ok(targets)
            }
        }
    }
}

fn parse(target: &str) -> Result<Uri, DiscoveryError> {
    let invalid = |reason: &str| DiscoveryError::InvalidTarget {
        target: target.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = target
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid("expected an http:// or https:// URI")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if uri.port_u16().is_none() {
        return Err(invalid("no port"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_must_be_full_uris() {
        assert!(Discovery::fixed(["http://127.0.0.1:50051"]).is_ok());
        for bad in ["127.0.0.1:50051", "http://host", "ftp://h:1", "http://:1"] {
            let error = Discovery::fixed([bad]).unwrap_err();
            assert!(error.to_string().contains(bad), "{error}");
        }
        assert!(matches!(
            Discovery::fixed(Vec::<String>::new()),
            Err(DiscoveryError::Empty)
        ));
    }

    #[tokio::test]
    async fn dns_resolves_every_address_with_the_name_as_origin() {
        let discovery = Discovery::dns("http://localhost:50051", Duration::from_secs(30)).unwrap();
        let targets = discovery.resolve().await.unwrap();
        assert!(!targets.is_empty());
        for target in &targets {
            assert_eq!(
                target.origin,
                "http://localhost:50051".parse::<Uri>().unwrap()
            );
            assert_eq!(target.connect.port_u16(), Some(50051));
            assert!(target.connect.host().unwrap() != "localhost");
        }
    }
}
