//! Tern's wire formats, and nothing else: the FlatBuffers schemas of the client protocol
//! and of the gateway↔logic link (generated code in [`client`] and [`link`]), the 4-byte
//! frame header both use ([`frame`]), helpers that encode the frames every tier needs
//! ([`encode`]), the documented protocol error codes ([`codes`]) and the user signature
//! format ([`sig`]), which is part of the login contract.
//!
//! Invariant: no other crate invents a frame format; everything that crosses a socket is
//! a frame built and parsed here. This crate does no I/O.

pub mod codes;
pub mod conversation;
pub mod encode;
pub mod frame;
pub mod message;
pub mod sig;
pub mod usersig;

#[allow(clippy::all, clippy::pedantic, unused_imports, dead_code, non_camel_case_types, mismatched_lifetime_syntaxes, deprecated)]
#[rustfmt::skip]
mod client_generated {
    include!("generated/client_generated.rs");
}
#[allow(clippy::all, clippy::pedantic, unused_imports, dead_code, non_camel_case_types, mismatched_lifetime_syntaxes, deprecated)]
#[rustfmt::skip]
mod link_generated {
    include!("generated/link_generated.rs");
}

/// Generated types of `fbs/client.fbs` (client ⇄ gateway frames).
pub use client_generated::tern::client;
/// Generated types of `fbs/link.fbs` (gateway ⇄ logic frames).
pub use link_generated::tern::link;

pub use flatbuffers;
pub use frame::{FrameError, HEADER_LEN, PROTOCOL_VERSION};
