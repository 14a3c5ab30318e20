//! The worker's OS layer: an epoll instance that sleeps with a nanosecond timeout
//! (`epoll_pwait2`, so a send due in 80 µs is written in about 80 µs, not after the next
//! whole millisecond), non-blocking sockets connected from a chosen loopback source, and
//! a non-blocking stdin. Every `unsafe` here is one plain syscall on a descriptor this
//! module owns or was handed; nothing here knows about frames or runs.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// Readable.
pub const IN: u32 = libc::EPOLLIN as u32;
/// Writable.
pub const OUT: u32 = libc::EPOLLOUT as u32;

/// One epoll instance (level-triggered: a socket with bytes left is reported again, so
/// one `read` per wake-up is enough and no read is spent on `EAGAIN`).
pub struct Epoll {
    fd: OwnedFd,
    /// `epoll_pwait2` works here (Linux ≥ 5.11); otherwise millisecond `epoll_wait`.
    pwait2: bool,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; the returned descriptor is owned from here on.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Epoll { fd: unsafe { OwnedFd::from_raw_fd(fd) }, pwait2: true })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: valid epoll descriptor, `ev` outlives the call.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn add(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, events)
    }

    pub fn modify(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, events)
    }

    /// Waits at most `timeout_us` for events; returns how many of `events` were filled.
    pub fn wait(&mut self, events: &mut [libc::epoll_event], timeout_us: u64) -> io::Result<usize> {
        let max = events.len().min(i32::MAX as usize) as libc::c_int;
        if self.pwait2 {
            let ts = libc::timespec {
                tv_sec: (timeout_us / 1_000_000) as libc::time_t,
                tv_nsec: ((timeout_us % 1_000_000) * 1_000) as libc::c_long,
            };
            // SAFETY: valid epoll descriptor; `events` is writable for `max` entries; `ts`
            // outlives the call; a null sigmask means "do not change the mask".
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    self.fd.as_raw_fd(),
                    events.as_mut_ptr(),
                    max,
                    &ts as *const libc::timespec,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            };
            if rc >= 0 {
                return Ok(rc as usize);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => return Ok(0),
                Some(libc::ENOSYS) => self.pwait2 = false,
                _ => return Err(e),
            }
        }
        let ms = timeout_us.div_ceil(1_000).min(i32::MAX as u64) as libc::c_int;
        // SAFETY: as above.
        let rc = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::EINTR) { Ok(0) } else { Err(e) };
        }
        Ok(rc as usize)
    }
}

/// Asks the kernel to wake this thread's timed sleeps within 1 µs of their deadline
/// (the default slack is 50 µs, which would show up as send lateness).
pub fn tighten_timer_slack() {
    // SAFETY: prctl with an integer argument; failure only leaves the default slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong) };
}

/// Sleeps until [`crate::harness::schedule::mono_us`] reaches `until_us` (absolute, so a
/// late wake-up does not push the next tick later). Unlike a wait in [`Epoll::wait`],
/// no socket wakes this sleep: a busy worker sleeps out its tick and then takes
/// everything that arrived meanwhile in one go.
pub fn sleep_until(until_us: u64) {
    let ts = libc::timespec {
        tv_sec: (until_us / 1_000_000) as libc::time_t,
        tv_nsec: ((until_us % 1_000_000) * 1_000) as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec that outlives the call; the remainder pointer may
    // be null with TIMER_ABSTIME. EINTR just ends the sleep early (the loop re-checks).
    unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut()) };
}

/// Makes `fd` non-blocking.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller holds open.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Reads from stdin (descriptor 0) without `std::io::stdin`'s buffer, which would hold
/// bytes that epoll no longer reports.
pub fn read_stdin(buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid and writable for its length; fd 0 is ours to read.
    let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Starts a non-blocking TCP connect to `target` from `source` (IPv4 targets; IPv6
/// targets connect from the kernel's choice). The socket becomes writable when the
/// connect has finished; [`Socket::take_error`] then says how.
///
/// `IP_BIND_ADDRESS_NO_PORT` defers the port choice to `connect`, so one source address
/// serves every destination with its own port range.
pub fn start_connect(source: Ipv4Addr, target: SocketAddr) -> io::Result<Socket> {
    let domain = if target.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
    s.set_nodelay(true)?;
    if target.is_ipv4() {
        let one: libc::c_int = 1;
        // SAFETY: valid fd owned by `s`; the option value is a c_int that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        s.bind(&SocketAddr::new(source.into(), 0).into())?;
    }
    match s.connect(&target.into()) {
        Ok(()) => Ok(s),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(s),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_with_sub_millisecond_timeouts_and_sees_a_connect() {
        let mut ep = Epoll::new().unwrap();
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
        let t = crate::harness::schedule::mono_us();
        assert_eq!(ep.wait(&mut evs, 300).unwrap(), 0);
        let waited = crate::harness::schedule::mono_us() - t;
        assert!((250..20_000).contains(&waited), "{waited} µs");

        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = start_connect(Ipv4Addr::new(127, 1, 0, 9), l.local_addr().unwrap()).unwrap();
        ep.add(s.as_raw_fd(), 7, OUT).unwrap();
        let n = ep.wait(&mut evs, 2_000_000).unwrap();
        assert_eq!((n, { evs[0].u64 }), (1, 7));
        assert!(s.take_error().unwrap().is_none());
        let (_, peer) = l.accept().unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::V4(Ipv4Addr::new(127, 1, 0, 9)));
    }
}
