//! Client frames: tern_schema::frame::split_frame, parse_client, parse_client_framed, and every field of what verifies.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_gateway::fuzzing::client_frame(data));
