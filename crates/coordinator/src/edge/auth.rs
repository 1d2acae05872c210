//! Who a caller is, and what it may do.
//!
//! - **Principals** come from `--auth-file` (TOML, [`AuthTable::parse`]): a name, the
//!   SHA-256 of its token (never the token), or the SPIFFE ID of its client certificate,
//!   and its permissions.
//! - **Certificate identities**: with mTLS (`--tls-client-ca`), a verified client
//!   certificate whose SAN URI is `spiffe://<trust-domain>/agentmesh/worker/<role>` makes
//!   its holder that role's worker, and `spiffe://<trust-domain>/agentmesh/coordinator`
//!   a coordinator (which may vouch for the caller of a call it forwards).
//! - **The permission table** ([`grpc_need`], [`http_need`]): what each call needs, in
//!   one place. A method the table does not name needs `admin`, so a new one is closed
//!   until someone decides.
//!
//! The gate ([`crate::edge::gate`]) authenticates and authorizes every gated call with
//! [`Authority::authenticate`] and [`Principal::authorize`], and hands the [`Principal`]
//! down as a request extension; no handler looks at a token.

use crate::errors::MeshError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The gRPC metadata / HTTP header a worker names its role in when it attaches; the gate
/// authorizes it, and the worker edge refuses a Hello naming another role.
pub(crate) use agentmesh_discovery::ROLE_METADATA;

/// The header in which a standby names the certificate identity (a SPIFFE ID) of the
/// caller whose call it forwards. The leader believes it only from a caller that is
/// itself a coordinator (permission `coordinator`); every coordinator drops it from
/// anyone else's call before forwarding.
pub(crate) const CALLER_METADATA: &str = "x-agentmesh-caller";

/// The dashboard's login cookie: the token itself, HttpOnly and SameSite=Strict, so a
/// standby's reverse proxy passes it to the leader unchanged and page scripts never see it.
pub(crate) const TOKEN_COOKIE: &str = "agentmesh_token";

/// The trust domain of SPIFFE IDs when `--trust-domain` is not given.
pub const DEFAULT_TRUST_DOMAIN: &str = "agentmesh";

/// One permission a principal may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Permission {
    /// `worker:<role>`: serve that role; `worker:*` any role.
    Worker(String),
    /// `sessions:read`: list, show, watch, transcripts, workers.
    SessionsRead,
    /// `sessions:write`: create and cancel sessions; includes read.
    SessionsWrite,
    /// `admin`: everything.
    Admin,
    /// `coordinator`: a coordinator of this mesh, which may vouch for the certificate
    /// identity of a caller whose call it forwards (nothing else).
    Coordinator,
}

impl Permission {
    fn parse(text: &str) -> Result<Permission, String> {
        match text {
            "sessions:read" => Ok(Permission::SessionsRead),
            "sessions:write" => Ok(Permission::SessionsWrite),
            "admin" => Ok(Permission::Admin),
            "coordinator" => Ok(Permission::Coordinator),
            "worker:*" => Ok(Permission::Worker("*".into())),
            _ => match text.strip_prefix("worker:") {
                Some(role) => agentmesh_core::session::validate_role(role)
                    .map(|()| Permission::Worker(role.to_string()))
                    .map_err(|why| format!("permission {text:?}: {why}")),
                None => Err(format!(
                    "unknown permission {text:?}: use worker:<role>, worker:*, sessions:read, \
                     sessions:write, admin or coordinator"
                )),
            },
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Permission::Worker(role) => write!(f, "worker:{role}"),
            Permission::SessionsRead => f.write_str("sessions:read"),
            Permission::SessionsWrite => f.write_str("sessions:write"),
            Permission::Admin => f.write_str("admin"),
            Permission::Coordinator => f.write_str("coordinator"),
        }
    }
}

/// What one call needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// Attach as a worker of this role.
    Serve(String),
    Read,
    Write,
    Admin,
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Serve(role) => write!(f, "worker:{role}"),
            Need::Read => f.write_str("sessions:read"),
            Need::Write => f.write_str("sessions:write"),
            Need::Admin => f.write_str("admin"),
        }
    }
}

/// The permission table of the gRPC port: what a call to `path` needs. `role` is the
/// worker's [`ROLE_METADATA`], for `WorkerService/Attach`.
pub(crate) fn grpc_need(path: &str, role: Option<&str>) -> Result<Need, MeshError> {
    Ok(match path {
        "/agentmesh.v1.WorkerService/Attach" => {
            let role = role.ok_or_else(|| {
                MeshError::InvalidArgument(format!(
                    "a worker must name its role in {ROLE_METADATA} metadata (mesh-worker does)"
                ))
            })?;
            agentmesh_core::session::validate_role(role)
                .map_err(|why| MeshError::InvalidArgument(format!("{ROLE_METADATA}: {why}")))?;
            Need::Serve(role.to_string())
        }
        "/agentmesh.v1.SessionService/CreateSession"
        | "/agentmesh.v1.SessionService/CancelSession" => Need::Write,
        "/agentmesh.v1.SessionService/GetSession"
        | "/agentmesh.v1.SessionService/ListSessions"
        | "/agentmesh.v1.SessionService/GetTranscript"
        | "/agentmesh.v1.SessionService/ListWorkers"
        | "/agentmesh.v1.SessionService/WatchSession"
        | "/agentmesh.v1.SessionService/WatchMesh" => Need::Read,
        // Not in the table: closed until someone decides what it needs.
        _ => Need::Admin,
    })
}

/// The permission table of the HTTP API: reads are GET (and HEAD), writes are POST.
pub(crate) fn http_need(method: &http::Method) -> Need {
    match *method {
        http::Method::GET | http::Method::HEAD => Need::Read,
        http::Method::POST => Need::Write,
        _ => Need::Admin,
    }
}

/// How a principal was recognised (for logs and `/api/whoami`; never a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// No authentication is configured: everyone may do everything.
    Open,
    Token,
    /// A verified client certificate with this SPIFFE ID.
    Certificate(String),
    /// A certificate identity vouched for by a coordinator that forwarded the call.
    Vouched {
        id: String,
        by: String,
    },
}

/// An authenticated caller. Travels down as a request extension; holds no secret.
#[derive(Clone, Debug)]
pub(crate) struct Principal {
    pub name: String,
    pub permissions: Vec<Permission>,
    pub via: Via,
    /// The worker signing keys this principal may announce (`keys = [...]` in the auth
    /// file, hex or base64); empty allows any. Enforced at the Hello, where a worker's
    /// key is first seen ([`Principal::allows_key`]).
    pub keys: Vec<agentmesh_core::trust::PublicKey>,
}

impl Principal {
    /// The caller of a coordinator without authentication.
    pub fn anonymous() -> Principal {
        Principal {
            name: "anonymous".into(),
            permissions: vec![Permission::Admin],
            via: Via::Open,
            keys: Vec::new(),
        }
    }

    pub fn may(&self, need: &Need) -> bool {
        self.permissions.iter().any(|p| match (p, need) {
            (Permission::Admin, _) => true,
            (Permission::Worker(role), Need::Serve(wanted)) => role == "*" || role == wanted,
            (Permission::SessionsWrite, Need::Read | Need::Write) => true,
            (Permission::SessionsRead, Need::Read) => true,
            _ => false,
        })
    }

    /// Ok when this principal may announce `key` as its worker's signing key: it pins
    /// none, or `key` is one of those it pins. PERMISSION_DENIED naming the key otherwise.
    pub fn allows_key(&self, key: &agentmesh_core::trust::PublicKey) -> Result<(), MeshError> {
        if self.keys.is_empty() || self.keys.contains(key) {
            return Ok(());
        }
        Err(MeshError::PermissionDenied(format!(
            "{} may announce only the signing keys its auth file entry pins ({}); not {key}",
            self.name,
            self.keys
                .iter()
                .map(|k| k.short())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// Ok when this principal may do what the call needs; PERMISSION_DENIED naming both.
    pub fn authorize(&self, need: &Need) -> Result<(), MeshError> {
        if self.may(need) {
            return Ok(());
        }
        let holds = if self.permissions.is_empty() {
            "no permissions".to_string()
        } else {
            self.permissions
                .iter()
                .map(Permission::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(MeshError::PermissionDenied(format!(
            "{} holds {holds}; this needs {need}",
            self.name
        )))
    }

    fn is_coordinator(&self) -> bool {
        self.permissions
            .iter()
            .any(|p| matches!(p, Permission::Coordinator | Permission::Admin))
    }
}

/// What a caller presented, as the edge found it.
#[derive(Default, Debug)]
pub(crate) struct Presented<'a> {
    /// The bearer token (`authorization: Bearer`, or the dashboard's cookie).
    pub token: Option<&'a str>,
    /// The SAN URIs of the verified client certificate, if any.
    pub certificate_uris: &'a [String],
    /// [`CALLER_METADATA`]: the identity a forwarding coordinator vouches for.
    pub vouched: Option<&'a str>,
}

/// The principals of an auth file, and the certificate identities of a trust domain.
#[derive(Debug, Default)]
pub(crate) struct AuthTable {
    trust_domain: String,
    by_token: HashMap<[u8; 32], Arc<Principal>>,
    by_spiffe: HashMap<String, Arc<Principal>>,
}

/// Who may call: everyone (no auth configured), or the principals of a table.
#[derive(Debug)]
pub(crate) enum Authority {
    Open,
    Table(AuthTable),
}

impl Authority {
    pub fn is_open(&self) -> bool {
        matches!(self, Authority::Open)
    }

    /// The principal behind what a caller presented. A token wins over a certificate; an
    /// unknown token is refused even when a certificate would do (a caller who sends a
    /// wrong token should hear so).
    pub fn authenticate(&self, presented: &Presented<'_>) -> Result<Principal, MeshError> {
        let table = match self {
            Authority::Open => return Ok(Principal::anonymous()),
            Authority::Table(table) => table,
        };
        let principal = if let Some(token) = presented.token {
            table.by_token(token).ok_or_else(|| {
                MeshError::Unauthenticated(
                    "the token is not known to this coordinator (check --token-file or \
                     MESH_TOKEN against the auth file's token_sha256)"
                        .into(),
                )
            })?
        } else if !presented.certificate_uris.is_empty() {
            table
                .by_certificate(presented.certificate_uris)
                .ok_or_else(|| {
                    MeshError::Unauthenticated(format!(
                        "the client certificate names no identity this coordinator knows \
                         (SAN URIs {:?}; want spiffe://{}/agentmesh/worker/<role> or one in \
                         the auth file)",
                        presented.certificate_uris, table.trust_domain
                    ))
                })?
        } else {
            return Err(MeshError::Unauthenticated(
                "no credentials: send a token (authorization: Bearer <token>; --token-file \
                 or MESH_TOKEN) or a client certificate"
                    .into(),
            ));
        };
        match presented.vouched {
            Some(id) if principal.is_coordinator() => {
                let mut vouched = table
                    .by_certificate(std::slice::from_ref(&id.to_string()))
                    .ok_or_else(|| {
                        MeshError::Unauthenticated(format!(
                            "coordinator {} forwarded a call from {id:?}, an identity this \
                             coordinator does not know",
                            principal.name
                        ))
                    })?;
                vouched.via = Via::Vouched {
                    id: id.to_string(),
                    by: principal.name.clone(),
                };
                Ok(vouched)
            }
            _ => Ok(principal),
        }
    }
}

impl AuthTable {
    /// A table with no principals of its own: certificate identities only (`--tls-client-ca`
    /// without `--auth-file`).
    pub fn certificates_only(trust_domain: &str) -> AuthTable {
        AuthTable {
            trust_domain: trust_domain.to_string(),
            ..AuthTable::default()
        }
    }

    pub fn len(&self) -> usize {
        self.by_token.len() + self.by_spiffe.len()
    }

    fn by_token(&self, token: &str) -> Option<Principal> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_token.get(&hash).map(|p| (**p).clone())
    }

    /// The principal of a certificate's SAN URIs: one the auth file names by `spiffe_id`,
    /// else the identities of the trust domain.
    fn by_certificate(&self, uris: &[String]) -> Option<Principal> {
        for uri in uris {
            if let Some(p) = self.by_spiffe.get(uri) {
                let mut principal = (**p).clone();
                principal.via = Via::Certificate(uri.clone());
                return Some(principal);
            }
            let prefix = format!("spiffe://{}/agentmesh/", self.trust_domain);
            let Some(path) = uri.strip_prefix(&prefix) else {
                continue;
            };
            let permission = if path == "coordinator" {
                Permission::Coordinator
            } else if let Some(role) = path.strip_prefix("worker/") {
                if agentmesh_core::session::validate_role(role).is_err() {
                    continue;
                }
                Permission::Worker(role.to_string())
            } else {
                continue;
            };
            return Some(Principal {
                name: uri.clone(),
                permissions: vec![permission],
                via: Via::Certificate(uri.clone()),
                keys: Vec::new(),
            });
        }
        None
    }

    /// Parses an auth file; `name` is how errors name it. An error says the line and what
    /// to fix.
    pub fn parse(text: &str, name: &str, trust_domain: &str) -> Result<AuthTable, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Doc {
            #[serde(default)]
            principal: Vec<toml::Spanned<PrincipalDoc>>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct PrincipalDoc {
            name: toml::Spanned<String>,
            token_sha256: Option<toml::Spanned<String>>,
            spiffe_id: Option<toml::Spanned<String>>,
            #[serde(default)]
            permissions: Vec<toml::Spanned<String>>,
            /// Worker signing keys this principal may announce (issue 13).
            #[serde(default)]
            keys: Vec<toml::Spanned<String>>,
        }
        let at = |span: std::ops::Range<usize>, what: String| {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("auth file {name} line {line}: {what}")
        };
        let doc: Doc = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => at(span, e.message().to_string()),
            None => format!("auth file {name}: {}", e.message()),
        })?;
        let mut table = AuthTable::certificates_only(trust_domain);
        let mut names = HashMap::new();
        for entry in doc.principal {
            let span = entry.span();
            let p = entry.into_inner();
            if p.name.get_ref().trim().is_empty() {
                return Err(at(
                    p.name.span(),
                    "a principal needs a non-empty name".into(),
                ));
            }
            if names.insert(p.name.get_ref().clone(), ()).is_some() {
                return Err(at(
                    p.name.span(),
                    format!(
                        "principal {:?} is listed twice; give each a name of its own",
                        p.name.get_ref()
                    ),
                ));
            }
            let mut permissions = Vec::new();
            for permission in &p.permissions {
                permissions.push(
                    Permission::parse(permission.get_ref())
                        .map_err(|why| at(permission.span(), why))?,
                );
            }
            if permissions.is_empty() {
                return Err(at(
                    span,
                    format!(
                        "principal {:?} has no permissions: add permissions = [\"sessions:read\"] \
                         or another",
                        p.name.get_ref()
                    ),
                ));
            }
            let mut keys = Vec::new();
            for key in &p.keys {
                keys.push(
                    agentmesh_core::trust::PublicKey::parse(key.get_ref())
                        .map_err(|why| at(key.span(), format!("keys: {why}")))?,
                );
            }
            let principal = Arc::new(Principal {
                name: p.name.get_ref().clone(),
                permissions,
                via: Via::Token,
                keys,
            });
            if p.token_sha256.is_none() && p.spiffe_id.is_none() {
                return Err(at(
                    span,
                    format!(
                        "principal {:?} has neither token_sha256 nor spiffe_id: add \
                         token_sha256 = \"<hex SHA-256 of the token>\" (sha256sum of the token)",
                        p.name.get_ref()
                    ),
                ));
            }
            if let Some(hash) = &p.token_sha256 {
                let bytes = hex::decode(hash.get_ref().trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| {
                        at(
                            hash.span(),
                            "token_sha256 must be 64 hex digits, the SHA-256 of the token \
                             (e.g. printf %s \"$TOKEN\" | sha256sum), never the token itself"
                                .into(),
                        )
                    })?;
                if table.by_token.insert(bytes, principal.clone()).is_some() {
                    return Err(at(
                        hash.span(),
                        "this token_sha256 is another principal's too; give each principal \
                         a token of its own"
                            .into(),
                    ));
                }
            }
            if let Some(id) = &p.spiffe_id {
                if !id.get_ref().starts_with("spiffe://") {
                    return Err(at(
                        id.span(),
                        format!(
                            "spiffe_id {:?} must be a spiffe:// URI (the client certificate's \
                             SAN URI)",
                            id.get_ref()
                        ),
                    ));
                }
                if table
                    .by_spiffe
                    .insert(id.get_ref().clone(), principal.clone())
                    .is_some()
                {
                    return Err(at(
                        id.span(),
                        format!("spiffe_id {:?} is listed twice", id.get_ref()),
                    ));
                }
            }
        }
        Ok(table)
    }
}

/// The bearer token of an `authorization` header value, if it is one.
pub(crate) fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The token in a `cookie` header, if the dashboard's cookie is there.
pub(crate) fn cookie_token(value: &str) -> Option<&str> {
    value.split(';').find_map(|pair| {
        let (name, token) = pair.trim().split_once('=')?;
        (name == TOKEN_COOKIE && !token.is_empty()).then_some(token)
    })
}

/// Whether a token can travel in the dashboard's cookie as it is.
pub(crate) fn cookie_safe(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b',' | b';' | b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-backend-token";

    fn hash(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    fn table(text: &str) -> Authority {
        Authority::Table(AuthTable::parse(text, "auth.toml", "example.org").expect("parses"))
    }

    fn with_token(token: &str) -> Presented<'_> {
        Presented {
            token: Some(token),
            ..Presented::default()
        }
    }

    #[test]
    fn the_permission_table_names_every_method() {
        let cases = [
            ("CreateSession", Need::Write),
            ("CancelSession", Need::Write),
            ("GetSession", Need::Read),
            ("ListSessions", Need::Read),
            ("GetTranscript", Need::Read),
            ("ListWorkers", Need::Read),
            ("WatchSession", Need::Read),
            ("WatchMesh", Need::Read),
            ("SomethingNew", Need::Admin),
        ];
        for (method, need) in cases {
            let path = format!("/agentmesh.v1.SessionService/{method}");
            assert_eq!(grpc_need(&path, None).unwrap(), need, "{method}");
        }
        assert_eq!(
            grpc_need("/agentmesh.v1.WorkerService/Attach", Some("backend")).unwrap(),
            Need::Serve("backend".into())
        );
        let missing = grpc_need("/agentmesh.v1.WorkerService/Attach", None).unwrap_err();
        assert!(missing.to_string().contains(ROLE_METADATA), "{missing}");
        assert!(grpc_need("/agentmesh.v1.WorkerService/Attach", Some("Bad Role")).is_err());
        assert_eq!(http_need(&http::Method::GET), Need::Read);
        assert_eq!(http_need(&http::Method::POST), Need::Write);
        assert_eq!(http_need(&http::Method::DELETE), Need::Admin);
    }

    #[test]
    fn write_includes_read_admin_includes_all_and_worker_roles_are_exact() {
        let p = |perms: &[&str]| Principal {
            name: "p".into(),
            permissions: perms
                .iter()
                .map(|s| Permission::parse(s).unwrap())
                .collect(),
            via: Via::Token,
            keys: Vec::new(),
        };
        let serve = |r: &str| Need::Serve(r.into());
        let reader = p(&["sessions:read"]);
        assert!(reader.may(&Need::Read) && !reader.may(&Need::Write));
        assert!(!reader.may(&serve("backend")));
        let writer = p(&["sessions:write"]);
        assert!(writer.may(&Need::Read) && writer.may(&Need::Write));
        assert!(!writer.may(&Need::Admin) && !writer.may(&serve("backend")));
        let backend = p(&["worker:backend"]);
        assert!(backend.may(&serve("backend")));
        assert!(!backend.may(&serve("security")) && !backend.may(&Need::Read));
        let any = p(&["worker:*"]);
        assert!(any.may(&serve("security")) && !any.may(&Need::Read));
        let admin = p(&["admin"]);
        for need in [Need::Read, Need::Write, Need::Admin, serve("x")] {
            assert!(admin.may(&need), "{need}");
        }
        let coordinator = p(&["coordinator"]);
        assert!(!coordinator.may(&Need::Read) && !coordinator.may(&serve("x")));
        let denied = reader.authorize(&Need::Write).unwrap_err();
        assert_eq!(denied.kind(), crate::errors::ErrorKind::NotPermitted);
        assert_eq!(
            denied.to_string(),
            "p holds sessions:read; this needs sessions:write"
        );
    }

    #[test]
    fn tokens_are_known_by_their_hash_only_and_never_echoed() {
        let auth = table(&format!(
            "[[principal]]\nname = \"backend-pool\"\ntoken_sha256 = \"{}\"\npermissions = [\"worker:backend\"]\n",
            hash(TOKEN)
        ));
        let p = auth.authenticate(&with_token(TOKEN)).unwrap();
        assert_eq!(p.name, "backend-pool");
        assert_eq!(p.via, Via::Token);
        let wrong = "not-the-token";
        let e = auth.authenticate(&with_token(wrong)).unwrap_err();
        assert_eq!(e.kind(), crate::errors::ErrorKind::Unauthenticated);
        assert!(!e.to_string().contains(wrong), "{e}");
        let none = auth.authenticate(&Presented::default()).unwrap_err();
        assert_eq!(none.kind(), crate::errors::ErrorKind::Unauthenticated);
        assert!(none.to_string().contains("no credentials"), "{none}");
        assert!(Authority::Open.authenticate(&Presented::default()).is_ok());
    }

    #[test]
    fn a_principal_may_pin_the_signing_keys_its_workers_announce() {
        use agentmesh_core::trust::KeyPair;
        let pinned = KeyPair::from_seed([1; 32]).public();
        let other = KeyPair::from_seed([2; 32]).public();
        let auth = table(&format!(
            "[[principal]]\nname = \"backend-pool\"\ntoken_sha256 = \"{}\"\n\
             permissions = [\"worker:backend\"]\nkeys = [\"{pinned}\"]\n",
            hash(TOKEN)
        ));
        let p = auth.authenticate(&with_token(TOKEN)).unwrap();
        assert!(p.allows_key(&pinned).is_ok());
        let refused = p.allows_key(&other).unwrap_err();
        assert_eq!(refused.kind(), crate::errors::ErrorKind::NotPermitted);
        assert!(refused.to_string().contains(&other.to_hex()), "{refused}");
        // No `keys`: any key (tokens and certificates still decide who may serve).
        assert!(Principal::anonymous().allows_key(&other).is_ok());
        let bad = AuthTable::parse(
            &format!(
                "[[principal]]\nname = \"p\"\ntoken_sha256 = \"{}\"\npermissions = \
                 [\"admin\"]\nkeys = [\"not a key\"]\n",
                hash(TOKEN)
            ),
            "auth.toml",
            "example.org",
        )
        .unwrap_err();
        assert!(bad.contains("line 5") && bad.contains("keys"), "{bad}");
    }

    #[test]
    fn certificates_name_workers_and_coordinators_of_the_trust_domain() {
        let auth = Authority::Table(AuthTable::certificates_only("example.org"));
        let uris = |u: &str| vec![u.to_string()];
        let worker = uris("spiffe://example.org/agentmesh/worker/backend");
        let p = auth
            .authenticate(&Presented {
                certificate_uris: &worker,
                ..Presented::default()
            })
            .unwrap();
        assert!(p.may(&Need::Serve("backend".into())));
        assert!(!p.may(&Need::Serve("security".into())));
        let foreign = uris("spiffe://elsewhere.org/agentmesh/worker/backend");
        let e = auth
            .authenticate(&Presented {
                certificate_uris: &foreign,
                ..Presented::default()
            })
            .unwrap_err();
        assert_eq!(e.kind(), crate::errors::ErrorKind::Unauthenticated);
        // A coordinator vouches for the certificate identity of a call it forwards ...
        let coordinator = uris("spiffe://example.org/agentmesh/coordinator");
        let vouched = auth
            .authenticate(&Presented {
                certificate_uris: &coordinator,
                vouched: Some("spiffe://example.org/agentmesh/worker/security"),
                ..Presented::default()
            })
            .unwrap();
        assert!(vouched.may(&Need::Serve("security".into())));
        assert!(matches!(vouched.via, Via::Vouched { .. }));
        // ... and nobody else is believed.
        let forged = auth
            .authenticate(&Presented {
                certificate_uris: &worker,
                vouched: Some("spiffe://example.org/agentmesh/worker/security"),
                ..Presented::default()
            })
            .unwrap();
        assert!(!forged.may(&Need::Serve("security".into())));
    }

    #[test]
    fn a_malformed_auth_file_is_refused_with_its_line_and_the_fix() {
        let cases = [
            (
                "[[principal]]\nname = \"a\"\ntoken_sha256 = \"abc\"\npermissions = [\"admin\"]\n",
                "line 3",
                "64 hex digits",
            ),
            (
                "[[principal]]\nname = \"a\"\ntoken_sha256 = \"HASH\"\npermissions = [\"sessions:all\"]\n",
                "line 4",
                "unknown permission \"sessions:all\"",
            ),
            (
                "[[principal]]\nname = \"a\"\npermissions = [\"admin\"]\n",
                "line 1",
                "neither token_sha256 nor spiffe_id",
            ),
            (
                "[[principal]]\nname = \"a\"\ntoken_sha256 = \"HASH\"\n",
                "line 1",
                "no permissions",
            ),
            (
                "[[principal]]\nname = \"a\"\ntoken = \"HASH\"\npermissions = [\"admin\"]\n",
                "line 3",
                "unknown field `token`",
            ),
            (
                "[[principal]]\nname = \"a\"\ntoken_sha256 = \"HASH\"\npermissions = [\"admin\"]\n[[principal]]\nname = \"a\"\ntoken_sha256 = \"OTHER\"\npermissions = [\"admin\"]\n",
                "line 6",
                "listed twice",
            ),
            (
                "[[principal]]\nname = \"a\"\ntoken_sha256 = \"HASH\"\npermissions = [\"admin\"]\n[[principal]]\nname = \"b\"\ntoken_sha256 = \"HASH\"\npermissions = [\"admin\"]\n",
                "line 7",
                "another principal's",
            ),
            ("[[principal]\nname = \"a\"\n", "line 1", ""),
            (
                "[[principal]]\nname = \"a\"\nspiffe_id = \"https://x\"\npermissions = [\"admin\"]\n",
                "line 3",
                "spiffe://",
            ),
            (
                "[[principal]]\nname = \"a\"\ntoken_sha256 = \"HASH\"\npermissions = [\"worker:Not A Role\"]\n",
                "line 4",
                "worker:Not A Role",
            ),
        ];
        for (text, line, what) in cases {
            let text = text
                .replace("HASH", &hash("one"))
                .replace("OTHER", &hash("two"));
            let e = AuthTable::parse(&text, "auth.toml", "example.org").unwrap_err();
            assert!(
                e.starts_with(&format!("auth file auth.toml {line}:")) && e.contains(what),
                "{text}\n=> {e}"
            );
        }
        let ok = AuthTable::parse("", "auth.toml", "example.org").unwrap();
        assert_eq!(ok.len(), 0);
    }

    #[test]
    fn headers_and_cookies_yield_the_token() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(
            cookie_token("theme=dark; agentmesh_token=abc; x=y"),
            Some("abc")
        );
        assert_eq!(cookie_token("agentmesh_token="), None);
        assert!(cookie_safe("abc-123_XYZ.~"));
        assert!(!cookie_safe("a;b") && !cookie_safe("a b") && !cookie_safe(""));
    }
}
