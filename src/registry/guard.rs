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

/// `ip`, the IPv4 address it embeds, and the loopback address when it is unspecified.
fn reaches(ip: IpAddr) -> [Option<IpAddr>; 3] {
    let embedded = match ip {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let low = std::net::Ipv4Addr::from((bits & 0xffff_ffff) as u32);
            let nat64 = bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000;
            // IPv4-compatible (deprecated, ::a.b.c.d), but not :: and ::1, which are IPv6's own.
            let compatible = bits >> 32 == 0 && bits > 1;
            v6.to_ipv4_mapped().or((nat64 || compatible).then_some(low)).map(IpAddr::V4)
        }
        IpAddr::V4(_) => None,
    };
    let local = match (ip, embedded) {
        (IpAddr::V4(v4), _) | (_, Some(IpAddr::V4(v4))) if v4.is_unspecified() => {
            Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
        }
        (IpAddr::V6(v6), _) if v6.is_unspecified() => Some(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
        _ => None,
    };
    [Some(ip), embedded, local]
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
#[error("{}", self.describe())]
pub struct Blocked {
    pub host: String,
    pub addr: IpAddr,
    pub net: IpNet,
}

impl Blocked {
    /// A name's resolved address is internal knowledge and is not echoed; a literal address is the user's own.
    fn describe(&self) -> String {
        if self.host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
            format!("{} is in the blocked network {}", self.host, self.net)
        } else {
            format!("{} resolves into the blocked network {}", self.host, self.net)
        }
    }
}

impl Guard {
    pub fn new(blocked: Vec<IpNet>) -> Self {
        Self { blocked: Arc::new(blocked) }
    }

    /// The blocked network `ip` reaches, if any. An address is judged by every address it reaches: its
    /// embedded IPv4 address (IPv4-mapped, IPv4-compatible, NAT64 `64:ff9b::/96`), and for the unspecified
    /// address (`0.0.0.0`, `::`), which Linux connects to the local host, the loopback address.
    pub fn blocked_by(&self, ip: IpAddr) -> Option<IpNet> {
        reaches(ip).into_iter().flatten().find_map(|a| self.blocked.iter().copied().find(|n| n.contains(a)))
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

    /// IPv4-compatible (`::a.b.c.d`) and NAT64 (`64:ff9b::/96`) spellings reach the IPv4 address they embed, and
    /// the unspecified address reaches this host's loopback.
    #[test]
    fn embedded_ipv4_and_unspecified_addresses_are_what_they_reach() {
        let g = Guard::new(DEFAULT_BLOCKED.iter().map(|s| s.parse().unwrap()).collect());
        for url in ["http://[::a9fe:a9fe]/", "http://[::169.254.169.254]/", "http://[64:ff9b::a9fe:a9fe]/"] {
            assert!(g.check_url(&url.parse().unwrap()).is_err(), "{url} reaches the metadata address");
        }
        let lo = Guard::new(vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
        for url in ["http://0.0.0.0:5000/", "http://[::]:5000/", "http://0:5000/"] {
            assert!(lo.check_url(&url.parse().unwrap()).is_err(), "{url} reaches loopback");
        }
        assert!(lo.check_url(&"http://[::2]/".parse().unwrap()).is_ok());
        assert!(g.check_url(&"http://[64:ff9b::808:808]/".parse().unwrap()).is_ok(), "NAT64 of a public address");
    }
}
