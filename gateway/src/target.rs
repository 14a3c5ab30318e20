//! Where a core's link to logic goes: a TCP address, a Unix-domain socket path on the
//! same host, or a logic tier in this very process.
//!
//! Why not always TCP: on one host the link's bytes gain nothing from the TCP stack
//! (segments, ACKs, the loopback softirq run inside every send), and in `tern all`
//! that work was a tenth of the server's CPU at 5,000 msgs/s. A Unix stream socket
//! keeps the same framing, ordering and backpressure (its send buffer bounds what is
//! in flight, as `SO_SNDBUF` does for TCP) at a fraction of the cost. In-process, each
//! connect makes a fresh socket pair and hands one end to logic: no name anyone else
//! could connect to, and a link that breaks is remade like a TCP one.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;

/// Prefix of a Unix-domain link address in configuration (`unix:/run/tern/link.sock`).
pub const UNIX_PREFIX: &str = "unix:";

/// Makes one link connection to a logic tier in this process: returns the gateway's
/// end of a fresh connected socket pair after handing the other end to logic.
#[derive(Clone)]
pub struct LinkDialer(Arc<dyn Fn() -> std::io::Result<UnixStream> + Send + Sync>);

impl LinkDialer {
    pub fn new(dial: impl Fn() -> std::io::Result<UnixStream> + Send + Sync + 'static) -> Self {
        LinkDialer(Arc::new(dial))
    }

    pub(crate) fn dial(&self) -> std::io::Result<UnixStream> {
        (self.0)()
    }
}

impl fmt::Debug for LinkDialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkDialer")
    }
}

/// A resolved link address.
#[derive(Clone, Debug)]
pub enum LinkTarget {
    Tcp(SocketAddr),
    Unix(PathBuf),
    InProcess(LinkDialer),
}

impl LinkTarget {
    /// Parses `link_addr`: `unix:PATH` or `host:port` (resolved once, at start, so a
    /// core never blocks on DNS).
    pub fn parse(addr: &str) -> Result<LinkTarget, String> {
        if let Some(path) = addr.strip_prefix(UNIX_PREFIX) {
            if path.is_empty() {
                return Err(format!("{addr:?}: a Unix link address needs a path after {UNIX_PREFIX:?}"));
            }
            return Ok(LinkTarget::Unix(PathBuf::from(path)));
        }
        addr.to_socket_addrs()
            .map_err(|e| format!("{addr:?}: {e}"))?
            .next()
            .map(LinkTarget::Tcp)
            .ok_or_else(|| format!("{addr:?} resolves to no address"))
    }
}

impl fmt::Display for LinkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkTarget::Tcp(a) => write!(f, "{a}"),
            LinkTarget::Unix(p) => write!(f, "{UNIX_PREFIX}{}", p.display()),
            LinkTarget::InProcess(_) => f.write_str("in-process"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_and_unix_addresses() {
        assert!(matches!(LinkTarget::parse("127.0.0.1:9100"), Ok(LinkTarget::Tcp(a)) if a.port() == 9100));
        match LinkTarget::parse("unix:/run/tern/link.sock") {
            Ok(t @ LinkTarget::Unix(_)) => assert_eq!(t.to_string(), "unix:/run/tern/link.sock"),
            other => panic!("expected a Unix target, got {other:?}"),
        }
        assert!(LinkTarget::parse("unix:").unwrap_err().contains("needs a path"));
        assert!(LinkTarget::parse("no-port").is_err());
    }
}
