//! What a client of the mesh trusts and presents: TLS roots, a client certificate, a
//! token. `mesh-worker`, `meshctl` and a standby coordinator forwarding to the leader
//! use the same [`ClientCredentials`].
//!
//! - **Roots**: the system's (as `rustls-native-certs` finds them, `SSL_CERT_FILE`
//!   included) plus `--tls-ca FILE`.
//! - **Client certificate** (`--tls-cert`, `--tls-key`): presented when the coordinator
//!   asks for one (mTLS); its SAN URI is the holder's identity.
//! - **Token**: `--token-file FILE` (read again for every new connection, so a rotated
//!   file takes effect without a restart), else `MESH_TOKEN`. Sent as
//!   `authorization: Bearer <token>`, marked sensitive; never logged, and no error here
//!   prints it.
//!
//! Files are read when a connection is opened, so a replaced certificate or token is
//! used from the next connection on.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// The metadata a worker names its role in when it attaches: the coordinator authorizes
/// that role before the stream opens, and refuses a Hello that names another.
pub const ROLE_METADATA: &str = "x-agentmesh-role";

/// The environment variable holding a token when no `--token-file` is given.
pub const TOKEN_ENV: &str = "MESH_TOKEN";

/// A client's TLS and token settings. `Debug` never shows a token.
#[derive(Clone, Default)]
pub struct ClientCredentials {
    /// Extra roots: a PEM bundle trusted besides the system's.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate chain (PEM), with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A file holding the token (surrounding whitespace ignored).
    pub token_file: Option<PathBuf>,
    /// The name the coordinator's certificate is checked against instead of the URL's
    /// host (coordinators advertise their pod IPs; their certificate names the Service).
    pub tls_server_name: Option<String>,
    /// The token from the environment, when there is no file.
    token_env: Option<String>,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("token_file", &self.token_file)
            .field("tls_server_name", &self.tls_server_name)
            .field("token_env", &self.token_env.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl ClientCredentials {
    /// Credentials from the flags, with the token of [`TOKEN_ENV`] when there is no
    /// token file. A certificate without its key (or the reverse) is refused.
    pub fn new(
        tls_ca: Option<PathBuf>,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        token_file: Option<PathBuf>,
    ) -> Result<ClientCredentials, String> {
        if tls_cert.is_some() != tls_key.is_some() {
            return Err("--tls-cert and --tls-key go together".into());
        }
        let credentials = ClientCredentials {
            tls_ca,
            tls_cert,
            tls_key,
            token_file,
            tls_server_name: None,
            token_env: std::env::var(TOKEN_ENV)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
        };
        // Fail at start, not at the first connection, on a file that cannot be read.
        credentials.token()?;
        credentials.tls_config()?;
        Ok(credentials)
    }

    /// TLS settings alone: no token, nothing read yet.
    pub fn tls_only(
        tls_ca: Option<PathBuf>,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
    ) -> ClientCredentials {
        ClientCredentials {
            tls_ca,
            tls_cert,
            tls_key,
            ..ClientCredentials::default()
        }
    }

    /// Checks the coordinator's certificate against `name` (see `tls_server_name`).
    pub fn with_server_name(mut self, name: Option<String>) -> ClientCredentials {
        self.tls_server_name = name;
        self
    }

    /// Without the environment's token (a coordinator's own credentials).
    pub fn without_env_token(mut self) -> ClientCredentials {
        self.token_env = None;
        self
    }

    /// The token, read now: the file's, else the environment's.
    pub fn token(&self) -> Result<Option<String>, String> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
            let token = text.trim();
            if token.is_empty() {
                return Err(format!(
                    "--token-file {}: the file is empty",
                    path.display()
                ));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "--token-file {}: a token is printable ASCII without spaces",
                    path.display()
                ));
            }
            return Ok(Some(token.to_string()));
        }
        Ok(self.token_env.clone())
    }

    /// `Bearer <token>` as sensitive metadata, when there is a token.
    pub fn authorization(&self) -> Result<Option<AsciiMetadataValue>, String> {
        let Some(token) = self.token()? else {
            return Ok(None);
        };
        let mut value: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "the token is not valid in a header (printable ASCII only)".to_string())?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// Whether a client certificate is configured.
    pub fn has_identity(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// The TLS settings of an `https://` connection: system roots, `--tls-ca`, and the
    /// client certificate if any.
    pub fn tls_config(&self) -> Result<ClientTlsConfig, String> {
        let mut config = ClientTlsConfig::new().trust_anchors(system_roots().iter().cloned());
        if let Some(name) = &self.tls_server_name {
            config = config.domain_name(name.clone());
        }
        if let Some(ca) = &self.tls_ca {
            config = config.ca_certificate(Certificate::from_pem(read(ca, "--tls-ca")?));
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config = config.identity(Identity::from_pem(
                read(cert, "--tls-cert")?,
                read(key, "--tls-key")?,
            ));
        }
        Ok(config)
    }

    /// An endpoint for `url`, with TLS when the scheme is `https`.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, String> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("invalid coordinator address {url:?}: {e}"))?;
        if !url.starts_with("https://") {
            return Ok(endpoint);
        }
        endpoint
            .tls_config(self.tls_config()?)
            .map_err(|e| format!("TLS settings for {url}: {e}"))
    }
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

/// The system's trust anchors, loaded once (an empty set where there are none).
pub fn system_roots() -> &'static [rustls_pki_types::TrustAnchor<'static>] {
    static ROOTS: OnceLock<Vec<rustls_pki_types::TrustAnchor<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        found
            .certs
            .iter()
            .filter_map(|der| webpki::anchor_from_trusted_cert(der).ok())
            .map(|anchor| anchor.to_owned())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token_and_the_file_wins() {
        let dir = std::env::temp_dir().join(format!("credentials-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  file-token-123\n").unwrap();
        let mut c = ClientCredentials {
            token_file: Some(file.clone()),
            token_env: Some("env-token-456".into()),
            ..ClientCredentials::default()
        };
        assert_eq!(c.token().unwrap().as_deref(), Some("file-token-123"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("env-token-456") && !shown.contains("file-token-123"));
        let value = c.authorization().unwrap().unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().unwrap(), "Bearer file-token-123");
        c.token_file = None;
        assert_eq!(c.token().unwrap().as_deref(), Some("env-token-456"));
        std::fs::write(&file, "").unwrap();
        c.token_file = Some(file);
        let e = c.token().unwrap_err();
        assert!(e.contains("empty"), "{e}");
        assert!(
            ClientCredentials::new(None, Some("c.pem".into()), None, None)
                .unwrap_err()
                .contains("go together")
        );
    }
}
