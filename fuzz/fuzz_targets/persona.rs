//! See `agentmesh_fuzz::persona`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    agentmesh_fuzz::persona::run(data);
});
