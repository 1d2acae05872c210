//! Proposal versions are named by the SHA-256 of their content: a sign-off is a
//! statement about exactly those bytes.

use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256 of `content`.
pub fn proposal_hash(content: &str) -> String {
    hex::encode(Sha256::digest(content.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_vector() {
        assert_eq!(
            super::proposal_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
