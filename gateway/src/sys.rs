//! Thin wrappers over the socket calls the gateway makes itself on connection sockets
//! (after the runtime reported readiness): non-blocking receive into the per-core
//! scratch buffer, vectored non-blocking send, and shutdown.
//!
//! These never block (MSG_DONTWAIT, whatever the descriptor's mode under io_uring or
//! epoll), never raise SIGPIPE (MSG_NOSIGNAL), and retry EINTR.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

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
pub fn shutdown_both(fd: RawFd) {
    // SAFETY: as above.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}
