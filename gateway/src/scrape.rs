//! The gateway's own metrics endpoint (`[gateway] metrics_addr`): a tiny HTTP/1.0
//! responder on a dedicated std thread, so a separate `tern gateway` process can be
//! scraped without pulling an async HTTP stack into the gateway.
//!
//! It answers `GET /metrics` (and `HEAD`) with whatever the render callback returns
//! (Prometheus text format), one request per connection, one connection at a time: a
//! scraper every few seconds is the only expected client. Every connection is bounded
//! in time and bytes, so a stuck or hostile client delays the next scrape by at most
//! [`CLIENT_BUDGET`]. It never touches the core threads.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Renders the metrics exposition (Prometheus text format).
pub type Render = Box<dyn Fn() -> String + Send + Sync>;

/// Whole time one client may take to send its request and read the answer.
const CLIENT_BUDGET: Duration = Duration::from_secs(2);
/// Largest request accepted (scrapers send a few hundred bytes).
const MAX_REQUEST: usize = 8 * 1024;
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `listener` until `stop` becomes readable (a byte, or the other end closed).
pub fn serve(listener: TcpListener, stop: UnixStream, render: Render) {
    let mut fds = [
        libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        // SAFETY: `fds` is a valid array of 2 pollfd for the call's duration.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::warn!(error = %io::Error::last_os_error(), "metrics endpoint stopped");
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        if fds[0].revents == 0 {
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, &render) {
                    tracing::debug!(error = %e, "metrics request failed");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                // Out of descriptors: back off rather than spin.
                tracing::warn!(error = %e, "metrics endpoint accept failed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Reads one request and writes the answer, within [`CLIENT_BUDGET`].
fn answer(mut stream: TcpStream, render: &Render) -> io::Result<()> {
    let deadline = Instant::now() + CLIENT_BUDGET;
    let left = || deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero());
    stream.set_nonblocking(false)?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let response = loop {
        let Some(t) = left() else { return Err(io::ErrorKind::TimedOut.into()) };
        stream.set_read_timeout(Some(t))?;
        let n = stream.read(&mut chunk)?;
        buf.extend_from_slice(&chunk[..n]);
        match respond(&buf, render) {
            Some(r) => break r,
            None if n == 0 || buf.len() >= MAX_REQUEST => break status("400 Bad Request", ""),
            None => {}
        }
    };
    let Some(t) = left() else { return Err(io::ErrorKind::TimedOut.into()) };
    stream.set_write_timeout(Some(t))?;
    stream.write_all(&response)?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

fn status(status: &str, extra: &str) -> Vec<u8> {
    format!("HTTP/1.0 {status}\r\nConnection: close\r\n{extra}Content-Length: 0\r\n\r\n").into_bytes()
}

/// The response to the request in `buf`, or `None` while the request is incomplete.
fn respond(buf: &[u8], render: &Render) -> Option<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(status("400 Bad Request", "")),
        Ok(httparse::Status::Complete(_)) => {}
    }
    let path = req.path.unwrap_or("");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let head = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Some(status("405 Method Not Allowed", "Allow: GET, HEAD\r\n")),
    };
    if path != "/metrics" {
        return Some(status("404 Not Found", ""));
    }
    let body = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(render)) {
        Ok(body) => body,
        Err(_) => return Some(status("500 Internal Server Error", "")),
    };
    let mut r = format!(
        "HTTP/1.0 200 OK\r\nConnection: close\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        r.extend_from_slice(body.as_bytes());
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_line(r: &[u8]) -> String {
        String::from_utf8_lossy(r).lines().next().unwrap_or_default().to_owned()
    }

    #[test]
    fn requests_and_answers() {
        let render: Render = Box::new(|| "up 1\n".to_owned());
        let ok = respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &render).unwrap();
        assert!(ok.starts_with(b"HTTP/1.0 200 OK\r\n") && ok.ends_with(b"\r\n\r\nup 1\n"), "{ok:?}");
        let head = respond(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n", &render).unwrap();
        assert!(String::from_utf8_lossy(&head).contains("Content-Length: 5\r\n") && head.ends_with(b"\r\n\r\n"));
        assert_eq!(respond(b"GET /metr", &render), None);
        assert_eq!(first_line(&respond(b"GET / HTTP/1.1\r\n\r\n", &render).unwrap()), "HTTP/1.0 404 Not Found");
        assert_eq!(
            first_line(&respond(b"POST /metrics HTTP/1.1\r\n\r\n", &render).unwrap()),
            "HTTP/1.0 405 Method Not Allowed"
        );
        assert_eq!(first_line(&respond(b"\x16\x03\x01\x00", &render).unwrap()), "HTTP/1.0 400 Bad Request");
        let boom: Render = Box::new(|| panic!("render failed"));
        assert_eq!(
            first_line(&respond(b"GET /metrics HTTP/1.1\r\n\r\n", &boom).unwrap()),
            "HTTP/1.0 500 Internal Server Error"
        );
    }
}
