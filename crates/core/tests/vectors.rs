//! The test vectors of `docs/verification.md`, kept in `docs/verification-vectors.json`
//! and checked here against the one implementation (`agentmesh_core::trust`); the Python
//! verifier (`tests/verifier/verify.py`) checks the same file against its own.
//! `VECTORS_WRITE=1 cargo test -p agentmesh-core --test vectors` rewrites the file.

use agentmesh_core::trust::{self, Certificate, Digest32, KeyPair};
use agentmesh_core::{Entry, EntryType, Phase, Verdict};
use serde_json::{Value, json};

fn vectors() -> Value {
    let worker = KeyPair::from_seed([0x11; 32]);
    let coordinator = KeyPair::from_seed([0x22; 32]);
    let session_id = "3f2a9c81d0b4";
    let task = "Design a rate limiter";
    let content = "lgtm";
    let proposal_hash = agentmesh_core::hash::proposal_hash("proposal v1");
    let mut entry = Entry {
        seq: 1,
        round: 1,
        phase: Phase::Review,
        role: "security".into(),
        worker_id: "security-1".into(),
        entry_type: EntryType::Review,
        timestamp_ms: 1_795_498_212_345,
        content: content.into(),
        verdict: Some(Verdict::Approve),
        concerns: vec!["rotate keys yearly".into()],
        proposal_hash: proposal_hash.clone(),
        proposal_version: 1,
        signature: Vec::new(),
        prompt_tokens: 12,
        completion_tokens: 3,
        attempt: 2,
        public_key: Some(worker.public()),
        chain_hash: Digest32::default(),
    };
    let content_sha256 = Digest32::from_content(content);
    let statement = trust::entry_statement(session_id, &entry, content_sha256).encode();
    entry.signature = worker.sign(&statement);
    let genesis = trust::genesis(session_id, task);
    let entry_bytes = trust::entry_bytes(&entry, &content_sha256);
    entry.chain_hash = trust::chain_hash(&genesis, &entry, &content_sha256);
    let mut cert = Certificate::build(
        session_id,
        task,
        &["security".to_string()],
        1,
        &proposal_hash,
        std::slice::from_ref(&entry),
    )
    .expect("one approval per participant");
    cert.sign(&coordinator);
    json!({
        "worker_seed": hex::encode([0x11u8; 32]),
        "worker_public_key": worker.public().to_hex(),
        "coordinator_seed": hex::encode([0x22u8; 32]),
        "coordinator_public_key": coordinator.public().to_hex(),
        "session_id": session_id,
        "task": task,
        "entry": serde_json::to_value(agentmesh_core::export::EntryDoc::from(&entry)).unwrap(),
        "content_sha256": content_sha256.to_hex(),
        "statement": hex::encode(&statement),
        "signature": hex::encode(&entry.signature),
        "genesis": genesis.to_hex(),
        "entry_bytes": hex::encode(&entry_bytes),
        "chain_hash": entry.chain_hash.to_hex(),
        "certificate": serde_json::to_value(&cert).unwrap(),
        "certificate_bytes": hex::encode(cert.signing_bytes()),
        "certificate_signature": hex::encode(&cert.signature),
    })
}

#[test]
fn the_documented_vectors_are_what_the_implementation_computes() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/verification-vectors.json"
    );
    let computed = vectors();
    if std::env::var_os("VECTORS_WRITE").is_some() {
        let text = serde_json::to_string_pretty(&computed).unwrap() + "\n";
        std::fs::write(path, text).unwrap();
    }
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the vectors file")).unwrap();
    assert_eq!(
        stored, computed,
        "docs/verification-vectors.json is out of date"
    );
}
