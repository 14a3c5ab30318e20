//! The sans-IO connection state machine fed arbitrary frames and events: no panic, only allowed actions.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_gateway::fuzzing::conn(data));
