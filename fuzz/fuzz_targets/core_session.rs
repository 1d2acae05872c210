//! The core's transition function under arbitrary input sequences. See
//! `agentmesh_fuzz::session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|plan: agentmesh_fuzz::session::Plan| {
    agentmesh_fuzz::session::run(&plan);
});
