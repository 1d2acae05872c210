//! Connecting to etcd, and bounding one etcd call.

use crate::error::DiscoveryError;
use agentmesh_proto::Backoff;
use etcd_client::{Client, ConnectOptions};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// How long one connection attempt may take (TCP connect and the first answer).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one etcd request may take before it counts as [`DiscoveryError::Unavailable`].
///
/// The client has no per-request timeout of its own (it would also cut off a campaign
/// that legitimately waits for the current leader), and with every endpoint down a request
/// waits for a connection forever; every unary call is therefore bounded.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2 keep-alive ping interval. etcd refuses pings more often than every 5 s
/// (`--grpc-keepalive-min-time`) and pings on an idle connection, so pings go every 10 s
/// and only while a stream (a watch, a keep-alive) is open.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Retry delays of [`connect_etcd_with_retry`]: doubling from the first to the cap.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_CAP: Duration = Duration::from_secs(10);

/// Connects to etcd and proves it answers (the client itself connects lazily).
///
/// Unreachable endpoints give [`DiscoveryError::Unavailable`] after [`CONNECT_TIMEOUT`];
/// no endpoints at all is [`DiscoveryError::Invalid`].
pub async fn connect_etcd(endpoints: &[String]) -> Result<Client, DiscoveryError> {
    connect_etcd_secured(endpoints, &EtcdSecurity::default()).await
}

/// How to reach an etcd that wants TLS and a user: `--etcd-ca` (the CA its server
/// certificates are checked against, besides the system roots), `--etcd-cert` and
/// `--etcd-key` (this process's client certificate), `--etcd-user` with
/// `--etcd-password-file` or `MESH_ETCD_PASSWORD`. TLS needs `https://` endpoints.
/// `Debug` never shows the password.
#[derive(Clone, Default)]
pub struct EtcdSecurity {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub user: Option<String>,
    password: Option<String>,
}

/// Where `--etcd-user`'s password comes from when no `--etcd-password-file` is given.
pub const ETCD_PASSWORD_ENV: &str = "MESH_ETCD_PASSWORD";

impl std::fmt::Debug for EtcdSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSecurity")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl EtcdSecurity {
    /// From the flags; the password is read from `password_file`, else from
    /// [`ETCD_PASSWORD_ENV`]. Refuses a certificate without its key, a user without a
    /// password, and files it cannot read.
    pub fn new(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        user: Option<String>,
        password_file: Option<PathBuf>,
    ) -> Result<EtcdSecurity, DiscoveryError> {
        if cert.is_some() != key.is_some() {
            return Err(DiscoveryError::Invalid(
                "--etcd-cert and --etcd-key go together".into(),
            ));
        }
        let password = match &password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        DiscoveryError::Invalid(format!(
                            "--etcd-password-file {}: {e}",
                            path.display()
                        ))
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            None => std::env::var(ETCD_PASSWORD_ENV).ok(),
        };
        if user.is_some() && password.is_none() {
            return Err(DiscoveryError::Invalid(format!(
                "--etcd-user needs a password: --etcd-password-file FILE or {ETCD_PASSWORD_ENV}"
            )));
        }
        let security = EtcdSecurity {
            ca,
            cert,
            key,
            user,
            password,
        };
        security.tls()?;
        Ok(security)
    }

    /// The TLS settings, when any TLS flag is given.
    fn tls(&self) -> Result<Option<etcd_client::TlsOptions>, DiscoveryError> {
        if self.ca.is_none() && self.cert.is_none() {
            return Ok(None);
        }
        let read = |path: &PathBuf, flag: &str| {
            std::fs::read(path)
                .map_err(|e| DiscoveryError::Invalid(format!("{flag} {}: {e}", path.display())))
        };
        let mut tls = etcd_client::TlsOptions::new()
            .trust_anchors(crate::credentials::system_roots().iter().cloned());
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca, "--etcd-ca")?));
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            tls = tls.identity(etcd_client::Identity::from_pem(
                read(cert, "--etcd-cert")?,
                read(key, "--etcd-key")?,
            ));
        }
        Ok(Some(tls))
    }
}

/// [`connect_etcd`] to an etcd that may want TLS and a user.
pub async fn connect_etcd_secured(
    endpoints: &[String],
    security: &EtcdSecurity,
) -> Result<Client, DiscoveryError> {
    if endpoints.is_empty() {
        return Err(DiscoveryError::Invalid("no etcd endpoints given".into()));
    }
    let mut options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
        .with_keep_alive_while_idle(false)
        .with_tcp_keepalive(Duration::from_secs(30));
    if let Some(tls) = security.tls()? {
        options = options.with_tls(tls);
    }
    if let (Some(user), Some(password)) = (&security.user, &security.password) {
        // etcd's simple tokens expire when idle: fetch a new one instead of failing.
        options = options
            .with_user(user.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    let what = format!("connect to etcd at {}", endpoints.join(","));
    let mut client = bounded(
        &what,
        CONNECT_TIMEOUT,
        Client::connect(endpoints, Some(options)),
    )
    .await?;
    bounded(&what, CONNECT_TIMEOUT, client.status()).await?;
    Ok(client)
}

/// Connects to etcd, retrying with capped exponential back-off (0.25 s doubling to 10 s)
/// until it answers or `shutdown` resolves. Every failed attempt is logged at error level:
/// "etcd at X unreachable: ...; retrying in Ns". Returns `None` on shutdown. Never panics.
pub async fn connect_etcd_with_retry(
    endpoints: &[String],
    shutdown: impl Future<Output = ()>,
) -> Option<Client> {
    connect_etcd_with_retry_secured(endpoints, &EtcdSecurity::default(), shutdown).await
}

/// [`connect_etcd_with_retry`] to an etcd that may want TLS and a user. A refusal that
/// waiting cannot mend (bad credentials, an unreadable file) is retried all the same, and
/// logged each time: an operator fixing etcd's users should not have to restart us.
pub async fn connect_etcd_with_retry_secured(
    endpoints: &[String],
    security: &EtcdSecurity,
    shutdown: impl Future<Output = ()>,
) -> Option<Client> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_CAP);
    loop {
        let delay = tokio::select! {
            biased;
            _ = &mut shutdown => return None,
            result = connect_etcd_secured(endpoints, security) => match result {
                Ok(client) => {
                    if backoff.attempts() > 0 {
                        tracing::info!(
                            "connected to etcd at {} after {} failed attempt(s)",
                            endpoints.join(","),
                            backoff.attempts()
                        );
                    }
                    return Some(client);
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::error!(
                        "etcd at {} unreachable: {e}; retrying in {:.1}s",
                        endpoints.join(","),
                        delay.as_secs_f64()
                    );
                    delay
                }
            },
        };
        tokio::select! {
            biased;
            _ = &mut shutdown => return None,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Runs one etcd call with a deadline; a missed deadline or a transport failure is
/// [`DiscoveryError::Unavailable`].
pub async fn bounded<T>(
    what: &str,
    timeout: Duration,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, DiscoveryError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(DiscoveryError::from_etcd(what, e)),
        Err(_) => Err(timed_out(what, timeout)),
    }
}

pub(crate) fn timed_out(what: &str, timeout: Duration) -> DiscoveryError {
    DiscoveryError::Unavailable(format!(
        "{what}: etcd did not answer within {:.1}s",
        timeout.as_secs_f64()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retry_gives_up_on_shutdown() {
        // Port 9 (discard) on loopback: nothing listens, every attempt fails fast.
        let endpoints = vec!["http://127.0.0.1:9".to_string()];
        let got =
            connect_etcd_with_retry(&endpoints, tokio::time::sleep(Duration::from_millis(600)))
                .await;
        assert!(got.is_none());
    }

    #[tokio::test]
    async fn connect_reports_an_unreachable_endpoint_as_unavailable() {
        let endpoints = vec!["http://127.0.0.1:9".to_string()];
        let err = connect_etcd(&endpoints)
            .await
            .err()
            .expect("nothing listens");
        assert!(err.is_retryable(), "{err}");
    }

    #[tokio::test]
    async fn no_endpoints_is_invalid() {
        let err = connect_etcd(&[]).await.err().expect("refused");
        assert_eq!(
            err,
            DiscoveryError::Invalid("no etcd endpoints given".into())
        );
    }
}
