//! The gateway's sans-IO WebSocket upgrade handshake and frame decoder (masking, fragmentation, control frames, limits).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_gateway::fuzzing::ws_codec(data));
