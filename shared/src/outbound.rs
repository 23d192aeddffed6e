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

/// The kind of address that is not reached unless allowed; `None` for a global unicast one.
/// Everything that is not global unicast is named: IPv4's special-purpose blocks, and in IPv6
/// everything outside 2000::/3 and the special blocks inside it. An IPv4 address carried in an
/// IPv6 one (mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::`) is
/// judged as the IPv4 address it reaches.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match unmap(ip) {
        IpAddr::V4(v4) => v4_range(v4),
        IpAddr::V6(v6) => v6_range(v6),
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        _ if a == 0 => "unspecified",
        _ if a == 127 => "loopback",
        _ if a == 169 && b == 254 => "link-local",
        _ if a == 10 || (a == 172 && (16..32).contains(&b)) || (a == 192 && b == 168) => "private",
        _ if a == 100 && (64..128).contains(&b) => "shared (CGNAT)",
        _ if a == 192 && b == 0 && c == 0 => "protocol assignments (192.0.0.0/24)",
        _ if (a == 192 && b == 0 && c == 2)
            || (a == 198 && b == 51 && c == 100)
            || (a == 203 && b == 0 && c == 113) =>
        {
            "documentation"
        }
        _ if a == 198 && (18..20).contains(&b) => "benchmarking (198.18.0.0/15)",
        _ if a == 192 && b == 88 && c == 99 => "6to4 relay",
        _ if (224..240).contains(&a) => "multicast",
        _ if a >= 240 => "reserved",
        _ => return None,
    })
}

fn v6_range(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    Some(match () {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        // NAT64 (well-known prefix): the IPv4 address it reaches
        _ if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
            return v4_range(embedded(s[6], s[7])).map(|_| "NAT64 of an inner IPv4")
        }
        _ if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 => "NAT64 (local use)",
        // 6to4: the IPv4 address of its relay
        _ if s[0] == 0x2002 => {
            return v4_range(embedded(s[1], s[2])).map(|_| "6to4 of an inner IPv4")
        }
        _ if s[0] & 0xffc0 == 0xfe80 => "link-local",
        _ if s[0] & 0xfe00 == 0xfc00 => "private (unique local)",
        _ if s[0] & 0xff00 == 0xff00 => "multicast",
        _ if s[0] == 0x2001 && s[1] == 0x0db8 => "documentation",
        _ if s[0] == 0x3fff && s[1] & 0xf000 == 0 => "documentation",
        _ if s[0] == 0x2001 && s[1] < 0x0200 => "protocol assignments (2001::/23)",
        // (the IPv4-compatible `::a.b.c.d` and every other block outside 2000::/3)
        _ if s[0] & 0xe000 != 0x2000 => "reserved",
        _ => return None,
    })
}

/// Why a connection was not made. It names the host and the kind of address, never the
/// address a name resolved to (a job's error is its submitter's to read: naming inner addresses
/// would tell them what the deployment's network holds); `ip` is for the operator's log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("refused to connect to {host}: {} a {range} address, which is not reached unless CONVEYOR_OUTBOUND_ALLOW lists its network", if host_is_ip(host) { "it is" } else { "it resolves to" })]
pub struct Refused {
    pub host: String,
    pub ip: IpAddr,
    pub range: &'static str,
}

fn host_is_ip(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
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

    /// The addresses `host` (a name or an address) resolves to that may be reached, through
    /// the system's resolver; none permitted is the refusal of the first.
    pub async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
        let found: Vec<IpAddr> = tokio::net::lookup_host((host, port))
            .await?
            .map(|a| a.ip())
            .collect();
        let mut refused = None;
        let permitted: Vec<IpAddr> = found
            .into_iter()
            .filter(|ip| match self.check(host, *ip) {
                Ok(()) => true,
                Err(e) => {
                    refused.get_or_insert(e);
                    false
                }
            })
            .collect();
        match (permitted.is_empty(), refused) {
            (true, Some(refused)) => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                refused,
            )),
            _ => Ok(permitted),
        }
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
            match policy.resolve(&host, 0).await {
                Ok(permitted) => Ok(Box::new(
                    permitted
                        .into_iter()
                        .map(|ip| SocketAddr::new(ip, 0))
                        .collect::<Vec<_>>()
                        .into_iter(),
                ) as reqwest::dns::Addrs),
                Err(e) => match e.into_inner().map(|inner| inner.downcast::<Refused>()) {
                    Some(Ok(refused)) => Err(refused as _),
                    Some(Err(other)) => Err(other as _),
                    None => Err("the name did not resolve".into()),
                },
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
                // Never through a proxy (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY): the guard judges
                // the addresses the client connects to, and through a proxy it would see only
                // the proxy's.
                .no_proxy()
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
    fn every_address_that_is_not_global_unicast_is_named_and_embedded_ipv4_is_judged() {
        for (addr, range) in [
            // NAT64, 6to4 and IPv4-compatible forms of inner IPv4 addresses
            ("64:ff9b::7f00:1", "NAT64 of an inner IPv4"),
            ("64:ff9b::a9fe:a9fe", "NAT64 of an inner IPv4"),
            ("64:ff9b:1::a00:1", "NAT64 (local use)"),
            ("2002:7f00:1::1", "6to4 of an inner IPv4"),
            ("2002:a00:1::", "6to4 of an inner IPv4"),
            ("::127.0.0.1", "reserved"),
            ("::a9fe:a9fe", "reserved"),
            // IPv4 blocks that are not global
            ("192.0.0.8", "protocol assignments (192.0.0.0/24)"),
            ("198.18.0.1", "benchmarking (198.18.0.0/15)"),
            ("198.19.255.254", "benchmarking (198.18.0.0/15)"),
            ("192.0.2.1", "documentation"),
            ("203.0.113.9", "documentation"),
            ("240.0.0.1", "reserved"),
            // IPv6 outside 2000::/3, and special blocks inside it
            ("2001:db8::1", "documentation"),
            ("2001::1", "protocol assignments (2001::/23)"),
            ("3fff::1", "documentation"),
            ("100::1", "reserved"),
            ("5f00::1", "reserved"),
        ] {
            assert_eq!(special_range(ip(addr)), Some(range), "{addr}");
        }
        // (a NAT64 or 6to4 address of a public IPv4 address is as public as it)
        for addr in [
            "64:ff9b::808:808",
            "2002:808:808::1",
            "198.20.0.1",
            "192.0.1.1",
        ] {
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
        // (a name's address is not told: only that it is an inner one)
        assert!(!refused.to_string().contains("127.0.0.2"), "{refused}");
        assert!(refused.to_string().contains("meta"), "{refused}");
        let refused = policy.check("127.0.0.2", ip("127.0.0.2")).unwrap_err();
        assert!(
            refused.to_string().contains("127.0.0.2: it is a loopback"),
            "{refused}"
        );
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
