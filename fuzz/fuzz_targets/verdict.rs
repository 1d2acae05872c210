//! See `agentmesh_fuzz::verdict`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    agentmesh_fuzz::verdict::run(data);
});
