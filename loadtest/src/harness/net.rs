//! Sockets for many connections: loopback source addresses, `IP_BIND_ADDRESS_NO_PORT`,
//! the open-file limit, and a tiny HTTP/1.1 client for the setup calls.
//!
//! One source address has about 28,000 ephemeral ports towards one server address, so
//! connections are spread over 127.1.0.1, 127.1.0.2, ... Binding a source address
//! normally reserves a port at `bind` time, which limits it to one port range for all
//! destinations; `IP_BIND_ADDRESS_NO_PORT` defers the port choice to `connect`.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// First source address handed out.
const FIRST_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 1, 0, 1);

/// `count` loopback source addresses starting `offset` addresses after 127.1.0.1.
pub fn source_ips(offset: u32, count: u32) -> Vec<Ipv4Addr> {
    let base = u32::from(FIRST_SOURCE);
    (0..count).map(|k| Ipv4Addr::from(base.wrapping_add(offset + k) & 0x00ff_ffff | 0x7f00_0000)).collect()
}

/// Raises the soft open-file limit to the hard one; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Connects to `target` from `source` (IPv4 targets; IPv6 targets connect from the
/// kernel's choice).
pub async fn connect_from(source: Ipv4Addr, target: SocketAddr) -> std::io::Result<TcpStream> {
    if !target.is_ipv4() {
        return TcpStream::connect(target).await;
    }
    let socket = TcpSocket::new_v4()?;
    let one: libc::c_int = 1;
    // SAFETY: valid fd owned by `socket`, option value is a c_int that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    socket.bind(SocketAddr::new(source.into(), 0))?;
    socket.connect(target).await
}

/// Resolves a (validated, loopback) `host:port` once.
pub async fn resolve(addr: &str) -> std::io::Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{addr} resolves to nothing")))
}

/// A failed setup HTTP call.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http {addr}: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("http {addr}: malformed response: {what}")]
    Malformed { addr: String, what: String },
}

/// POSTs a JSON body (`Connection: close`); returns the status and the body.
pub async fn post_json(addr: &str, path_and_query: &str, body: &str) -> Result<(u16, String), HttpError> {
    let io = |source| HttpError::Io { addr: addr.to_owned(), source };
    let bad = |what: &str| HttpError::Malformed { addr: addr.to_owned(), what: what.to_owned() };
    let mut s = TcpStream::connect(addr).await.map_err(io)?;
    let req = format!(
        "POST {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.map_err(io)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.map_err(io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").ok_or_else(|| bad("no header end"))?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status"))?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(rest).ok_or_else(|| bad("bad chunked body"))? } else { rest.to_owned() };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n")?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        s = rest.get(n + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_are_loopback_and_distinct() {
        let ips = source_ips(250, 10);
        assert_eq!(ips[0], Ipv4Addr::new(127, 1, 0, 251));
        assert_eq!(ips[9], Ipv4Addr::new(127, 1, 1, 4));
        assert!(source_ips(0, 70_000).iter().all(|ip| ip.is_loopback()));
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").as_deref(), Some("hello world"));
        assert_eq!(dechunk("ff\r\nshort"), None);
    }

    #[tokio::test]
    async fn connects_from_a_chosen_source() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = l.local_addr().unwrap();
        let src = Ipv4Addr::new(127, 1, 0, 77);
        let s = connect_from(src, target).await.unwrap();
        assert_eq!(s.local_addr().unwrap().ip(), std::net::IpAddr::V4(src));
        assert!(raise_fd_limit() > 0);
    }
}
