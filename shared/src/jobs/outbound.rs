//! Where the shipped types may connect (`http.fetch`, `webhook.deliver`): public addresses
//! only, unless `CONVEYOR_OUTBOUND_ALLOW` lists the network. The address is checked after DNS,
//! at connect time (a resolver that hands the connector only permitted addresses, so a name
//! that resolves, or later re-resolves, to an inner address never reaches it), on every redirect
//! hop, and before the request for a URL whose host is an IP address (no DNS to go through).
//! A refusal is a permanent job error that says which address and why; no request is sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// An IP network, `address/prefix` (a bare address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix must be 0..={max}"))?,
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> (u128, u8) {
            match ip {
                IpAddr::V4(v4) => (u32::from(v4) as u128, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        }
        let ((net, width), (host, host_width)) = (bits(self.addr), bits(unmap(ip)));
        if width != host_width {
            return false;
        }
        let shift = width - self.prefix;
        shift >= width || (net >> shift) == (host >> shift)
    }
}

/// `::ffff:a.b.c.d` is the IPv4 address it carries.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The kind of address that is not reached unless allowed; `None` for a public one.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match unmap(ip) {
        IpAddr::V4(v4) => v4_range(v4),
        IpAddr::V6(v6) => v6_range(v6),
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match () {
        _ if ip.is_unspecified() || a == 0 => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_link_local() => "link-local",
        _ if ip.is_private() => "private",
        _ if a == 100 && (64..128).contains(&b) => "shared (CGNAT)",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_broadcast() || a >= 240 => "reserved",
        _ => return None,
    })
}

fn v6_range(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(match () {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if first & 0xffc0 == 0xfe80 => "link-local",
        _ if first & 0xfe00 == 0xfc00 => "private (unique local)",
        _ if ip.is_multicast() => "multicast",
        _ => return None,
    })
}

/// Why a connection was not made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("refused to connect to {host} ({ip}): a {range} address, which is not reached unless CONVEYOR_OUTBOUND_ALLOW lists its network")]
pub struct Refused {
    pub host: String,
    pub ip: IpAddr,
    pub range: &'static str,
}

/// The networks the shipped types may reach besides public addresses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboundPolicy {
    pub allow: Vec<Network>,
}

impl OutboundPolicy {
    /// `CONVEYOR_OUTBOUND_ALLOW`: networks separated by commas (empty: none).
    pub fn parse(list: &str) -> Result<Self, String> {
        let allow = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Network::parse)
            .collect::<Result<_, _>>()?;
        Ok(Self { allow })
    }

    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        match special_range(ip) {
            Some(range) if !self.allow.iter().any(|n| n.contains(ip)) => Err(Refused {
                host: host.to_string(),
                ip,
                range,
            }),
            _ => Ok(()),
        }
    }

    /// A URL whose host is an IP address, checked (a name is checked when it is resolved).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        let host = url.host_str().unwrap_or_default();
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => self.check(host, ip),
            Err(_) => Ok(()),
        }
    }
}

/// The resolver the client connects through: only the permitted addresses of a name.
struct GuardedResolver(Arc<OutboundPolicy>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let permitted: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check(&host, a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refused.get_or_insert(e);
                        false
                    }
                })
                .collect();
            match (permitted.is_empty(), refused) {
                (true, Some(refused)) => Err(Box::new(refused) as _),
                _ => Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// The HTTP client of the shipped types, under a policy: built on first use (not at start).
pub struct Outbound {
    policy: Arc<OutboundPolicy>,
    client: OnceLock<reqwest::Client>,
}

/// Redirects followed before a request fails.
const MAX_REDIRECTS: usize = 10;

impl Outbound {
    pub fn new(policy: OutboundPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
            client: OnceLock::new(),
        }
    }

    pub fn policy(&self) -> &OutboundPolicy {
        &self.policy
    }

    pub fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            let policy = self.policy.clone();
            reqwest::Client::builder()
                .user_agent(concat!("conveyor/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(10))
                .dns_resolver(Arc::new(GuardedResolver(self.policy.clone())))
                .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                    if let Err(refused) = policy.check_url(attempt.url()) {
                        attempt.error(refused)
                    } else if attempt.previous().len() >= MAX_REDIRECTS {
                        attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
                    } else {
                        attempt.follow()
                    }
                }))
                .build()
                .expect("HTTP client builds")
        })
    }
}

/// The refusal behind a failed request, if that is why it failed.
pub fn refusal(error: &reqwest::Error) -> Option<Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn inner_addresses_are_named_and_public_ones_pass() {
        for (addr, range) in [
            ("127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("224.0.0.1", "multicast"),
            ("0.0.0.0", "unspecified"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("fd00:ec2::254", "private (unique local)"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
        ] {
            assert_eq!(special_range(ip(addr)), Some(range), "{addr}");
        }
        for addr in ["8.8.8.8", "1.1.1.1", "100.128.0.1", "2606:4700::1111"] {
            assert_eq!(special_range(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn an_allowed_network_is_reached_and_nothing_beside_it() {
        let policy = OutboundPolicy::parse("127.0.0.1/32, 10.0.0.0/8 ,fd00::/8").unwrap();
        assert!(policy.check("h", ip("127.0.0.1")).is_ok());
        assert!(policy.check("h", ip("::ffff:127.0.0.1")).is_ok());
        assert!(policy.check("h", ip("10.200.0.1")).is_ok());
        assert!(policy.check("h", ip("fd00:ec2::254")).is_ok());
        let refused = policy.check("meta", ip("127.0.0.2")).unwrap_err();
        assert_eq!(refused.range, "loopback");
        assert!(refused.to_string().contains("127.0.0.2"), "{refused}");
        assert!(policy.check("h", ip("169.254.169.254")).is_err());
        assert!(OutboundPolicy::parse("").unwrap().allow.is_empty());
        assert!(OutboundPolicy::parse("0.0.0.0/0")
            .unwrap()
            .check("h", ip("10.0.0.1"))
            .is_ok());
        for bad in ["10.0.0.0/33", "not-a-net", "::/129", "1.2.3.4/x"] {
            assert!(OutboundPolicy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_url_with_an_address_for_a_host_is_checked_before_any_request() {
        let policy = OutboundPolicy::default();
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(policy
            .check_url(&url("http://169.254.169.254/latest/meta-data/"))
            .is_err());
        assert!(policy.check_url(&url("http://[::1]:8080/")).is_err());
        assert!(policy.check_url(&url("https://example.com/")).is_ok());
        assert!(policy.check_url(&url("https://8.8.8.8/")).is_ok());
    }
}
