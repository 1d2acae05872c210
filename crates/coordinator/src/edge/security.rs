//! What the edges trust, loaded from files and swapped whole on SIGHUP: the TLS server
//! configurations of both ports, the auth table, and this coordinator's own credentials
//! for forwarding to the leader.
//!
//! [`Security::reload`] reads every file again and, only if all of them are good, swaps
//! them in at once; a bad file leaves everything as it was and says why. New connections
//! get the new certificate; open streams keep theirs. Tokens are checked per call, so a
//! token removed from the auth file stops working at once, on open connections too.

use crate::edge::auth::{AuthTable, Authority, DEFAULT_TRUST_DOMAIN};
use crate::edge::tls::{self, ServerFiles, TlsCell};
use agentmesh_discovery::ClientCredentials;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// The security flags of `mesh-coordinator`.
#[derive(Clone, Debug, Default)]
pub struct SecuritySettings {
    /// `--tls-cert`, `--tls-key`: serve both ports over TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `--tls-client-ca`: verify client certificates against this CA (mTLS).
    pub tls_client_ca: Option<PathBuf>,
    /// `--auth-file`: the principals (TOML).
    pub auth_file: Option<PathBuf>,
    /// `--trust-domain`: of the SPIFFE IDs client certificates carry.
    pub trust_domain: Option<String>,
    /// `--tls-ca`: roots (besides the system's) for the leader's certificate when a
    /// standby forwards to it.
    pub tls_ca: Option<PathBuf>,
    /// `--token-file`: this coordinator's own token (a principal with `coordinator`),
    /// sent when it forwards the call of a caller known by its certificate.
    pub token_file: Option<PathBuf>,
    /// `--tls-server-name`: the name the leader's certificate is checked against when
    /// forwarding, instead of the host of its advertised URL (a pod IP).
    pub tls_server_name: Option<String>,
}

impl SecuritySettings {
    /// Whether callers must authenticate.
    pub fn auth_enabled(&self) -> bool {
        self.auth_file.is_some() || self.tls_client_ca.is_some()
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some()
    }
}

/// Everything loaded from the files at one moment.
pub(crate) struct Loaded {
    pub authority: Authority,
    /// This coordinator's credentials towards the leader (roots, its certificate, its
    /// token).
    pub forwarding: ClientCredentials,
    /// Bumped by every reload, so the gate knows its connections to the leader are stale.
    pub generation: u64,
}

struct Inner {
    settings: SecuritySettings,
    grpc_tls: TlsCell,
    http_tls: TlsCell,
    loaded: RwLock<Arc<Loaded>>,
}

/// The coordinator's trust settings and what they loaded; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Security(Arc<Inner>);

impl Default for Security {
    /// No TLS, no authentication: the embedded default on loopback.
    fn default() -> Security {
        Security::load(SecuritySettings::default()).expect("no files to read")
    }
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("settings", &self.0.settings)
            .finish()
    }
}

type Configs = (
    Option<Arc<tls::rustls::ServerConfig>>,
    Option<Arc<tls::rustls::ServerConfig>>,
);

impl Security {
    /// Reads every file the settings name; an error names the file and what is wrong.
    pub fn load(settings: SecuritySettings) -> anyhow::Result<Security> {
        let (grpc, http) = server_configs(&settings)?;
        let loaded = load_rest(&settings, 0)?;
        Ok(Security(Arc::new(Inner {
            settings,
            grpc_tls: TlsCell::new(grpc),
            http_tls: TlsCell::new(http),
            loaded: RwLock::new(Arc::new(loaded)),
        })))
    }

    /// Reads every file again; swaps them in only if all are good.
    pub fn reload(&self) -> anyhow::Result<()> {
        let inner = &self.0;
        let (grpc, http) = server_configs(&inner.settings)?;
        let generation = self.current().generation + 1;
        let loaded = load_rest(&inner.settings, generation)?;
        inner.grpc_tls.set(grpc);
        inner.http_tls.set(http);
        *inner.loaded.write().expect("security lock") = Arc::new(loaded);
        Ok(())
    }

    pub fn settings(&self) -> &SecuritySettings {
        &self.0.settings
    }

    pub(crate) fn current(&self) -> Arc<Loaded> {
        self.0.loaded.read().expect("security lock").clone()
    }

    pub(crate) fn grpc_tls(&self) -> TlsCell {
        self.0.grpc_tls.clone()
    }

    pub(crate) fn http_tls(&self) -> TlsCell {
        self.0.http_tls.clone()
    }

    /// One line saying how callers are let in, for the start-up log.
    pub fn describe(&self) -> String {
        let s = &self.0.settings;
        let tls = match (&s.tls_cert, &s.tls_client_ca) {
            (None, _) => "plain TCP (no TLS)".to_string(),
            (Some(_), None) => "TLS".to_string(),
            (Some(_), Some(_)) => "TLS, client certificates verified (mTLS)".to_string(),
        };
        let auth = match &self.current().authority {
            Authority::Open => "no authentication".to_string(),
            Authority::Table(table) => format!(
                "authentication required ({} principals in the auth file, trust domain {})",
                table.len(),
                s.trust_domain.as_deref().unwrap_or(DEFAULT_TRUST_DOMAIN)
            ),
        };
        format!("{tls}, {auth}")
    }
}

fn server_configs(settings: &SecuritySettings) -> anyhow::Result<Configs> {
    let files = match (&settings.tls_cert, &settings.tls_key) {
        (None, None) => {
            if settings.tls_client_ca.is_some() {
                anyhow::bail!("--tls-client-ca needs --tls-cert and --tls-key");
            }
            return Ok((None, None));
        }
        (Some(cert), Some(key)) => ServerFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: settings.tls_client_ca.clone(),
        },
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    let grpc = tls::server_config(&files, &[b"h2"]).map_err(anyhow::Error::msg)?;
    let http = tls::server_config(&files, &[b"http/1.1"]).map_err(anyhow::Error::msg)?;
    Ok((Some(grpc), Some(http)))
}

fn load_rest(settings: &SecuritySettings, generation: u64) -> anyhow::Result<Loaded> {
    let trust_domain = settings
        .trust_domain
        .as_deref()
        .unwrap_or(DEFAULT_TRUST_DOMAIN);
    let authority = match &settings.auth_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--auth-file {}: {e}", path.display()))?;
            Authority::Table(
                AuthTable::parse(&text, &path.display().to_string(), trust_domain)
                    .map_err(anyhow::Error::msg)?,
            )
        }
        None if settings.tls_client_ca.is_some() => {
            Authority::Table(AuthTable::certificates_only(trust_domain))
        }
        None => Authority::Open,
    };
    // Towards the leader this coordinator presents its own certificate (its SAN may name
    // it spiffe://<td>/agentmesh/coordinator) and, with --token-file, its own token.
    let forwarding = ClientCredentials::new(
        settings.tls_ca.clone(),
        settings.tls_cert.clone(),
        settings.tls_key.clone(),
        settings.token_file.clone(),
    )
    .map_err(anyhow::Error::msg)?
    .without_env_token()
    .with_server_name(settings.tls_server_name.clone());
    Ok(Loaded {
        authority,
        forwarding,
        generation,
    })
}
