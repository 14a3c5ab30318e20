//! Link frames from logic: a stream split with split_frame, each parse_link'ed, and the client frames they carry.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_gateway::fuzzing::link_frame(data));
