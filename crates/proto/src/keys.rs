//! Signing-key files, shared by every binary that signs (`mesh-worker`,
//! `mesh-coordinator`, `mesh-bench`): `mesh-worker keygen --out FILE` writes one, and
//! `--signing-key FILE` reads it. Without a file, a process draws an ephemeral key from
//! the operating system and says so. The format is
//! [`agentmesh_core::trust::KeyPair::to_file`]: a header line, the 32-byte Ed25519 seed in
//! hex, and the public key as a comment.

use agentmesh_core::trust::KeyPair;
use std::path::Path;

/// A fresh key from the operating system's randomness.
pub fn generate() -> Result<KeyPair, String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("cannot draw a key: {e}"))?;
    Ok(KeyPair::from_seed(seed))
}

/// Writes a new key to `path`, readable by its owner only (mode 0600), refusing to
/// overwrite an existing file. Returns the key.
pub fn keygen(path: &Path) -> Result<KeyPair, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = generate()?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(key.to_file().as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(key)
}

/// Reads the key at `path`.
pub fn load(path: &Path) -> Result<KeyPair, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    KeyPair::from_file(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The key of `--signing-key` if given, else an ephemeral one; the flag `true` when the
/// key is ephemeral (the caller says so in its log).
pub fn load_or_generate(path: Option<&Path>) -> Result<(KeyPair, bool), String> {
    match path {
        Some(path) => Ok((load(path)?, false)),
        None => Ok((generate()?, true)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_generated_key_file_reads_back_and_is_not_overwritten() {
        let dir = std::env::temp_dir().join(format!("agentmesh-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k");
        let key = super::keygen(&path).unwrap();
        assert_eq!(super::load(&path).unwrap().public(), key.public());
        assert!(
            super::keygen(&path).is_err(),
            "an existing key is never overwritten"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
