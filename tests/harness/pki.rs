//! Certificates, keys and tokens the auth tests make for themselves (rcgen on ring): a CA,
//! server certificates for 127.0.0.1, client certificates carrying SPIFFE IDs, auth files,
//! and a small TLS client for the HTTP port.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate authority that signs the test's certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM), written to `dir/<name>-ca.pem`.
    pub pem_path: PathBuf,
    dir: PathBuf,
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// A new CA named `name`, its files under `dir`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        std::fs::create_dir_all(dir).expect("pki dir");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("agentmesh test CA {name}"));
        let cert = params.self_signed(&key).expect("self-signed CA");
        let pem_path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem_path, cert.pem()).expect("write CA");
        Ca {
            issuer: Issuer::new(params, key),
            pem_path,
            dir: dir.to_path_buf(),
        }
    }

    /// A certificate for `file` (written as `<file>.pem` and `<file>.key`) with the SAN
    /// URIs `uris`; a server certificate for 127.0.0.1 and localhost when `server`.
    pub fn issue(&self, file: &str, server: bool, uris: &[&str]) -> CertFiles {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, file.to_string());
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            params
                .subject_alt_names
                .push(SanType::DnsName("localhost".try_into().expect("dns name")));
        }
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().expect("uri")));
        }
        let cert = params.signed_by(&key, &self.issuer).expect("signed leaf");
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}

/// The hex SHA-256 of a token, as the auth file holds it.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// An auth file: one principal per `(name, token, permissions)`; a token starting with
/// `spiffe://` is written as the principal's `spiffe_id` instead.
pub fn auth_file(principals: &[(&str, &str, &[&str])]) -> String {
    let mut text = String::new();
    for (name, token, permissions) in principals {
        let id = if token.starts_with("spiffe://") {
            format!("spiffe_id = \"{token}\"")
        } else {
            format!("token_sha256 = \"{}\"", token_hash(token))
        };
        let permissions: Vec<String> = permissions.iter().map(|p| format!("\"{p}\"")).collect();
        text.push_str(&format!(
            "[[principal]]\nname = \"{name}\"\n{id}\npermissions = [{}]\n\n",
            permissions.join(", ")
        ));
    }
    text
}

/// A fresh random token (hex).
pub fn fresh_token(label: &str) -> String {
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = rand::random::<u8>().wrapping_add(i as u8);
    }
    format!("{label}-{}", hex::encode(bytes))
}

/// One HTTP/1.0 request over TLS (or plain TCP when `ca` is `None`): (status, headers,
/// body). `client` is a client certificate to present.
pub fn https_request(
    addr: &str,
    ca: Option<&Path>,
    client: Option<&CertFiles>,
    request: &str,
) -> Result<(u16, String, String), String> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match ca {
        None => {
            tcp.write_all(request.as_bytes())
                .map_err(|e| e.to_string())?;
            let _ = tcp.read_to_end(&mut raw);
        }
        Some(ca) => {
            let config = client_config(ca, client)?;
            let name =
                rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
            let mut conn =
                rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
            let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
            tls.write_all(request.as_bytes())
                .map_err(|e| e.to_string())?;
            match tls.read_to_end(&mut raw) {
                Ok(_) => {}
                // A server that closes without close_notify still said everything.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {head:?}"))?;
    Ok((code, head.to_string(), body.to_string()))
}

fn client_config(ca: &Path, client: Option<&CertFiles>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let mut config = match client {
        Some(files) => {
            let chain = CertificateDer::pem_file_iter(&files.cert)
                .map_err(|e| e.to_string())?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
