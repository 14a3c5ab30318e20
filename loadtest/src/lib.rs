//! Tern's client side: a small async client for the long connection ([`client`]), a
//! one-line description of every frame ([`describe`]), and the `tern client` command
//! ([`cli`]), and the load-test harness ([`harness`], `tern loadtest`): many clients over
//! worker processes, open-loop scenarios, HdrHistogram measurements and reports.
//!
//! Invariant: this crate speaks to Tern only as a device would — through the frames
//! `tern-schema` defines, over the public TCP and WebSocket listeners. It knows nothing
//! of the gateway's, logic's or storage's internals, so what it measures and tests is
//! what real clients see.

pub mod cli;
pub mod client;
pub mod describe;
pub mod harness;
