//! Thin wrappers over the socket calls the gateway makes itself on connection sockets
//! (after the core's readiness set reported them): non-blocking receive into the
//! per-core scratch buffer, vectored non-blocking send, and shutdown; the per-core
//! epoll readiness set ([`Epoll`]) that holds parked connections; plus the CPU affinity
//! calls behind `pin_cores`.
//!
//! The socket calls never block (MSG_DONTWAIT, whatever the descriptor's mode under io_uring or
//! epoll), never raise SIGPIPE (MSG_NOSIGNAL), and retry EINTR.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Receives into `buf` without blocking. `Ok(0)` = orderly end of stream.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` writable bytes for the call's duration.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sends the slices in order without blocking; returns bytes accepted by the kernel.
pub fn sendv(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix (documented by std).
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    loop {
        // SAFETY: msg points at `bufs`, valid and unaliased for the call's duration.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Stops sending: queued bytes still go out, then FIN. The peer sees an orderly close
/// while we keep reading (and discarding) until it closes too.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: plain syscall on a descriptor we own; errors (e.g. ENOTCONN) are moot.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
}

/// Stops both directions. Also wakes a task waiting for readability on `fd` (the socket
/// reports end of stream), which is how a connection is told to finish.
/// Sets `SO_SNDBUF` (the kernel doubles it for bookkeeping and stops autotuning it).
pub fn set_send_buffer(fd: RawFd, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is a socket the caller owns; the option value is a valid c_int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn shutdown_both(fd: RawFd) {
    // SAFETY: as above.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// A per-core epoll set: level-triggered readiness of every connection and listener of
/// one core, keyed by a caller-chosen `u64`. Registration is kernel memory only (an
/// `epitem` per socket, ~128 B of slab); a parked connection costs user space nothing
/// but its table entry. The set's own descriptor is awaited by one runtime task.
#[derive(Debug)]
pub struct Epoll(OwnedFd);

/// Interest of a connection whose outbound queue is empty.
pub const EV_READ: u32 = libc::EPOLLIN as u32;
/// Interest while the socket pushes back: readable and writable.
pub const EV_READ_WRITE: u32 = (libc::EPOLLIN | libc::EPOLLOUT) as u32;

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; a non-negative result is a descriptor we now own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, key: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: key };
        // SAFETY: both descriptors are valid; `ev` outlives the call.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn add(&self, fd: RawFd, events: u32, key: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, key)
    }

    pub fn modify(&self, fd: RawFd, events: u32, key: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, key)
    }

    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Ready events without waiting (the runtime waits on the set's descriptor).
    pub fn poll_now(&self, out: &mut [libc::epoll_event]) -> io::Result<usize> {
        let max = libc::c_int::try_from(out.len()).unwrap_or(libc::c_int::MAX);
        loop {
            // SAFETY: `out` is valid for `max` events for the call's duration.
            let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), out.as_mut_ptr(), max, 0) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// A second descriptor of the set, for the runtime to poll for readability (an
    /// epoll descriptor is readable while any registered event is ready).
    pub fn watch_fd(&self) -> io::Result<OwnedFd> {
        self.0.try_clone()
    }
}

/// The CPUs the calling thread may run on (its affinity mask), ascending.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 = the calling thread.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET reads `set` within its CPU_SETSIZE bits.
    Ok((0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect())
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("cpu {cpu} out of range")));
    }
    // SAFETY: as above; CPU_SET writes within the set (cpu < CPU_SETSIZE checked).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 = the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_restricts_the_calling_thread_only() {
        let before = allowed_cpus().unwrap();
        assert!(!before.is_empty());
        let target = *before.last().unwrap();
        let inside = std::thread::spawn(move || {
            pin_current_thread(target).unwrap();
            allowed_cpus().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(inside, vec![target]);
        assert_eq!(allowed_cpus().unwrap(), before);
        assert!(pin_current_thread(libc::CPU_SETSIZE as usize).is_err());
    }
}
