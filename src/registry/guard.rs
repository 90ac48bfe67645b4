//! The SSRF guard. The registry host in an image string is attacker-chosen, and so are the token realm it
//! names and the redirects it sends: none of them may reach an address in `blockedNetworks` (by default
//! link-local and cloud metadata addresses). Literal IPs are checked before a request; names are checked
//! after resolution, inside the HTTP client's resolver, so a DNS answer cannot slip past the check.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

/// An IP network in CIDR notation, e.g. `169.254.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:169.254.169.254`) are their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid network {0:?}: expected CIDR notation such as 169.254.0.0/16 or fe80::/10")]
pub struct IpNetParse(String);

impl FromStr for IpNet {
    type Err = IpNetParse;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IpNetParse(s.to_string());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().map_err(|_| bad())?, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s.parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr: canonical(addr), prefix })
    }
}

impl<'de> serde::Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Link-local (cloud metadata on AWS, GCP, Azure, OpenStack), AWS's IPv6 metadata address, Alibaba's.
pub const DEFAULT_BLOCKED: &[&str] = &["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32"];

/// The set of blocked networks.
#[derive(Clone, Debug)]
pub struct Guard {
    blocked: Arc<Vec<IpNet>>,
}

/// A host that resolved only into blocked networks. Travels through the HTTP client's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {addr}, which is in the blocked network {net}")]
pub struct Blocked {
    pub host: String,
    pub addr: IpAddr,
    pub net: IpNet,
}

impl Guard {
    pub fn new(blocked: Vec<IpNet>) -> Self {
        Self { blocked: Arc::new(blocked) }
    }

    pub fn blocked_by(&self, ip: IpAddr) -> Option<IpNet> {
        self.blocked.iter().copied().find(|n| n.contains(ip))
    }

    /// Checks a URL's host when it is a literal IP (names are checked by the resolver).
    pub fn check_url(&self, url: &url::Url) -> Result<(), Blocked> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            _ => return Ok(()),
        };
        match self.blocked_by(ip) {
            Some(net) => Err(Blocked { host: ip.to_string(), addr: ip, net }),
            None => Ok(()),
        }
    }
}

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first_blocked = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match guard.blocked_by(a.ip()) {
                    Some(net) => {
                        first_blocked.get_or_insert((a.ip(), net));
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                if let Some((addr, net)) = first_blocked {
                    return Err(Box::new(Blocked { host, addr, net }) as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Finds a [`Blocked`] anywhere in an error's source chain.
pub fn find_blocked<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Blocked> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(b) = e.downcast_ref::<Blocked>() {
            return Some(b);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let cases = [
            ("169.254.0.0/16", "169.254.169.254", true),
            ("169.254.0.0/16", "169.255.0.1", false),
            ("169.254.0.0/16", "::ffff:169.254.169.254", true),
            ("fe80::/10", "fe80::1", true),
            ("fe80::/10", "fec0::1", false),
            ("10.0.0.1", "10.0.0.1", true),
            ("10.0.0.1", "10.0.0.2", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("127.0.0.0/8", "::1", false),
        ];
        for (net, ip, want) in cases {
            let n: IpNet = net.parse().unwrap();
            assert_eq!(n.contains(ip.parse().unwrap()), want, "{net} ∋ {ip}");
        }
        for bad in ["1.2.3.4/33", "fe80::/129", "nope", "1.2.3.4/x"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn literal_ip_urls_are_checked() {
        let g = Guard::new(DEFAULT_BLOCKED.iter().map(|s| s.parse().unwrap()).collect());
        assert!(g.check_url(&"http://169.254.169.254/latest".parse().unwrap()).is_err());
        assert!(g.check_url(&"http://[::ffff:169.254.169.254]/".parse().unwrap()).is_err());
        assert!(g.check_url(&"https://[fe80::1]:5000/v2/".parse().unwrap()).is_err());
        assert!(g.check_url(&"http://127.0.0.1:5000/v2/".parse().unwrap()).is_ok());
        assert!(g.check_url(&"https://registry.example.com/v2/".parse().unwrap()).is_ok());
    }
}
