//! The security flags every binary shares, defined once: how a client reaches the
//! coordinator ([`ClientFlags`]: `mesh-worker`, `meshctl`) and how anyone reaches etcd
//! ([`EtcdFlags`]: all three). Each flag also reads a `MESH_*` variable, so a container
//! or a Helm chart sets them without a command line. No flag takes a secret itself:
//! secrets come from files (or `MESH_TOKEN` / `MESH_ETCD_PASSWORD`).

use crate::connect::EtcdSecurity;
use crate::credentials::ClientCredentials;
use crate::error::DiscoveryError;
use std::path::PathBuf;

/// TLS and token of a client of the coordinator.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClientFlags {
    /// PEM bundle of CAs trusted (besides the system's) for the coordinator's certificate
    /// when its URL is https://.
    #[arg(long, global = true, env = "MESH_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) presented to a coordinator that verifies them (mTLS).
    #[arg(
        long,
        global = true,
        env = "MESH_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        global = true,
        env = "MESH_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Check the coordinator's certificate for this name instead of the URL's host (e.g.
    /// the Service's DNS name, when the URL is a pod IP the election names).
    #[arg(long, global = true, env = "MESH_TLS_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// File holding the token sent as `authorization: Bearer` (read again for every new
    /// connection). Without it, the token in MESH_TOKEN, if set.
    #[arg(long, global = true, env = "MESH_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl ClientFlags {
    pub fn credentials(&self) -> Result<ClientCredentials, String> {
        ClientCredentials::new(
            self.tls_ca.clone(),
            self.tls_cert.clone(),
            self.tls_key.clone(),
            self.token_file.clone(),
        )
        .map(|c| c.with_server_name(self.tls_server_name.clone()))
    }
}

/// TLS and user of an etcd connection.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EtcdFlags {
    /// PEM bundle of CAs trusted (besides the system's) for etcd's certificates; etcd
    /// endpoints are then https://.
    #[arg(long, global = true, env = "MESH_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for an etcd started with --client-cert-auth.
    #[arg(
        long,
        global = true,
        env = "MESH_ETCD_CERT",
        value_name = "FILE",
        requires = "etcd_key"
    )]
    pub etcd_cert: Option<PathBuf>,
    /// The etcd client certificate's private key (PEM).
    #[arg(
        long,
        global = true,
        env = "MESH_ETCD_KEY",
        value_name = "FILE",
        requires = "etcd_cert"
    )]
    pub etcd_key: Option<PathBuf>,
    /// etcd user (etcd auth enabled); the password comes from --etcd-password-file or
    /// MESH_ETCD_PASSWORD.
    #[arg(long, global = true, env = "MESH_ETCD_USER", value_name = "NAME")]
    pub etcd_user: Option<String>,
    /// File holding the etcd user's password.
    #[arg(
        long,
        global = true,
        env = "MESH_ETCD_PASSWORD_FILE",
        value_name = "FILE",
        requires = "etcd_user"
    )]
    pub etcd_password_file: Option<PathBuf>,
}

impl EtcdFlags {
    pub fn security(&self) -> Result<EtcdSecurity, DiscoveryError> {
        EtcdSecurity::new(
            self.etcd_ca.clone(),
            self.etcd_cert.clone(),
            self.etcd_key.clone(),
            self.etcd_user.clone(),
            self.etcd_password_file.clone(),
        )
    }
}
