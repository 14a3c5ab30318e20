//! The gateway's TCP/WebSocket wire framing, fed whole and in arbitrary reads: the same frames must come out.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_gateway::fuzzing::wire(data));
