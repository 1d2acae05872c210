//! Signed transcripts, checked offline (issue 13): a real negotiation with pinned keys
//! (`mesh-worker keygen`, `--signing-key` on every process), its JSON export verified by
//! `meshctl verify` and by the second verifier written from docs/verification.md alone
//! (`tests/verifier/verify.py`, PyPI `cryptography`), and six tamperings of the export
//! that both must refuse, naming the same seq and field.

use crate::ALL_ROLES;
use agentmesh_e2e::{Cluster, CoordinatorOpts, bin, http_get};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's python with `cryptography` (`make verifier-setup`; set up here if missing).
fn python() -> PathBuf {
    let root = repo_root();
    let python = root.join(".venv-verify/bin/python");
    if !python.exists() {
        let status = Command::new("bash")
            .arg(root.join("scripts/verifier-setup.sh"))
            .status()
            .expect("run scripts/verifier-setup.sh");
        assert!(status.success(), "scripts/verifier-setup.sh failed");
    }
    python
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `mesh-worker keygen --out FILE`; returns the public key it prints.
fn keygen(path: &Path) -> String {
    let out = run(
        &bin("mesh-worker"),
        &["keygen", "--out", path.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout
        .trim()
        .rsplit_once("public key ")
        .expect("keygen names the public key")
        .1
        .to_string()
}

/// "seq 5 content" from "INVALID: seq 5 content: ...".
fn broken_at(stderr: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(stderr);
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("INVALID: "))
        .unwrap_or_else(|| panic!("no INVALID line in {stderr}"));
    line.split_once(": ").map_or(line, |(at, _)| at).to_string()
}

/// A directory of this test's own, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("agentmesh-verify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn exports_verify_offline_and_both_verifiers_name_each_tampering() {
    let dir = TempDir::new();
    let key = |name: &str| dir.path().join(format!("{name}.key"));
    let coordinator_key = keygen(&key("coordinator"));
    let mut cluster = Cluster::start(CoordinatorOpts {
        extra: vec![
            "--signing-key".into(),
            key("coordinator").display().to_string(),
        ],
        ..CoordinatorOpts::default()
    });
    let mut roles = serde_json::Map::new();
    for role in ALL_ROLES {
        let public = keygen(&key(role));
        roles.insert(role.into(), Value::from(vec![public]));
        let path = key(role).display().to_string();
        cluster.add_worker(role, &format!("{role}-1"), &["--signing-key", &path]);
    }
    cluster.wait_workers(ALL_ROLES.len(), Duration::from_secs(30));
    let trust = dir.path().join("trust.json");
    let trust_doc = serde_json::json!({"coordinator": coordinator_key, "roles": roles});
    std::fs::write(&trust, trust_doc.to_string()).unwrap();
    let trust = trust.to_str().unwrap().to_string();

    // Two negotiations to consensus, each exported as JSON.
    let mut exports = Vec::new();
    for _ in 0..2 {
        let out = cluster.meshctl(&["run", agentmesh_brain::DEMO_TASK]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            text(&out),
            cluster.logs()
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let id = stdout.lines().next().unwrap()["session ".len()..]
            .trim()
            .to_string();
        let file = dir.path().join(format!("{id}.json"));
        let out = cluster.meshctl(&[
            "export",
            &id,
            "--format",
            "json",
            "-o",
            file.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        exports.push((id, file));
    }
    let (id, file) = &exports[0];
    let file = file.to_str().unwrap();
    let py = python();
    let verifier = repo_root().join("tests/verifier/verify.py");
    let verifier = verifier.to_str().unwrap();

    // Valid: both verifiers, with and without the trust file, and meshctl by id.
    let out = cluster.meshctl(&["verify", file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("valid: session {id} (CONSENSUS)")),
        "{stdout}"
    );
    assert!(stdout.contains("certificate: 7 approvals"), "{stdout}");
    let out = cluster.meshctl(&["verify", file, "--trust", &trust]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("every key is one the trust file names"));
    let out = cluster.meshctl(&["verify", id, "--trust", &trust]);
    assert_eq!(out.status.code(), Some(0), "by id: {}", text(&out));
    let plain: &[&str] = &[verifier, file];
    let trusted: &[&str] = &[verifier, file, "--trust", &trust];
    for args in [plain, trusted] {
        let out = run(&py, args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "python {args:?}: {}",
            text(&out)
        );
    }
    let out = run(
        &py,
        &[
            verifier,
            "--vectors",
            repo_root()
                .join("docs/verification-vectors.json")
                .to_str()
                .unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "vectors: {}", text(&out));

    // `meshctl show` marks every sign-off verified, and the certificate.
    let out = cluster.meshctl(&["show", id]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("sign-offs (checked here"), "{stdout}");
    assert!(!stdout.contains("NOT VERIFIED"), "{stdout}");
    assert!(
        stdout.contains("certificate verified: 7 approvals"),
        "{stdout}"
    );

    // The coordinator publishes its key and the workers' it has seen.
    let (code, body) = http_get(
        cluster.http.as_ref().unwrap(),
        "/.well-known/agentmesh-keys",
    )
    .expect("the keys endpoint answers");
    assert_eq!(code, 200, "{body}");
    let keys: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(keys["coordinator"]["public_key"], coordinator_key.as_str());
    assert_eq!(keys["trust"]["roles"], Value::Object(roles.clone()));

    // Six tamperings: each refused by both verifiers, at the same seq and field.
    let original: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let other: Value =
        serde_json::from_str(&std::fs::read_to_string(&exports[1].1).unwrap()).unwrap();
    let entries = original["entries"].as_array().unwrap().clone();
    // Seq 5 and 6: two contributions of different workers.
    assert_ne!(entries[4]["public_key"], entries[5]["public_key"]);
    let review = entries
        .iter()
        .position(|e| e["verdict"] == "OBJECT")
        .expect("a first-round objection");
    type Tamper = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Tamper, String)> = vec![
        (
            "one character of an entry's content",
            Box::new(|d: &mut Value| {
                let c = d["entries"][4]["content"].as_str().unwrap().to_string();
                let mut chars: Vec<char> = c.chars().collect();
                chars[0] = if chars[0] == 'X' { 'Y' } else { 'X' };
                d["entries"][4]["content"] = Value::from(chars.into_iter().collect::<String>());
            }),
            "seq 5 content".into(),
        ),
        (
            "a review's content (where content_sha256 is updated too)",
            Box::new(move |d: &mut Value| {
                let e = &mut d["entries"][review];
                let changed = format!("{}.", e["content"].as_str().unwrap());
                let sha = agentmesh_core::trust::Digest32::from_content(&changed).to_hex();
                e["content"] = Value::from(changed);
                e["content_sha256"] = Value::from(sha);
            }),
            format!("seq {} signature", review + 1),
        ),
        (
            "an entry deleted",
            Box::new(|d: &mut Value| {
                d["entries"].as_array_mut().unwrap().remove(4);
            }),
            "seq 5 seq".into(),
        ),
        (
            "two entries reordered",
            Box::new(|d: &mut Value| d["entries"].as_array_mut().unwrap().swap(4, 5)),
            "seq 5 seq".into(),
        ),
        (
            "a key swapped for another worker's",
            Box::new(|d: &mut Value| {
                let other = d["entries"][5]["public_key"].clone();
                d["entries"][4]["public_key"] = other;
            }),
            "seq 5 signature".into(),
        ),
        (
            "one approval removed from the certificate",
            Box::new(|d: &mut Value| {
                d["session"]["certificate"]["approvals"]
                    .as_array_mut()
                    .unwrap()
                    .pop();
            }),
            "certificate.approvals".into(),
        ),
        (
            "the certificate replaced by another session's",
            Box::new(move |d: &mut Value| {
                d["session"]["certificate"] = other["session"]["certificate"].clone();
            }),
            "certificate.session_id".into(),
        ),
    ];
    for (what, tamper, expected) in cases {
        let mut doc = original.clone();
        tamper(&mut doc);
        let path = dir.path().join("tampered.json");
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        let path = path.to_str().unwrap();
        let out = cluster.meshctl(&["verify", path]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        assert_eq!(broken_at(&out.stderr), expected, "{what}: {}", text(&out));
        let out = run(&py, &[verifier, path]);
        assert_eq!(out.status.code(), Some(1), "python, {what}: {}", text(&out));
        assert_eq!(
            broken_at(&out.stderr),
            expected,
            "python, {what}: {}",
            text(&out)
        );
    }

    // With --trust: a key that verifies but is not the expected one is refused too.
    let mut wrong_trust = trust_doc.clone();
    wrong_trust["roles"]["supervisor"] = Value::from(vec![coordinator_key.clone()]);
    wrong_trust["coordinator"] = roles["backend"][0].clone();
    let wrong = dir.path().join("wrong-trust.json");
    std::fs::write(&wrong, wrong_trust.to_string()).unwrap();
    let wrong = wrong.to_str().unwrap();
    let out = cluster.meshctl(&["verify", file, "--trust", wrong]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(broken_at(&out.stderr), "seq 1 public_key", "{}", text(&out));
    let out = run(&py, &[verifier, file, "--trust", wrong]);
    assert_eq!(broken_at(&out.stderr), "seq 1 public_key", "{}", text(&out));
    wrong_trust["roles"] = Value::Object(roles);
    std::fs::write(dir.path().join("wrong-trust.json"), wrong_trust.to_string()).unwrap();
    let out = cluster.meshctl(&["verify", file, "--trust", wrong]);
    assert_eq!(
        broken_at(&out.stderr),
        "certificate.coordinator_key",
        "{}",
        text(&out)
    );
    let out = run(&py, &[verifier, file, "--trust", wrong]);
    assert_eq!(
        broken_at(&out.stderr),
        "certificate.coordinator_key",
        "{}",
        text(&out)
    );
}
