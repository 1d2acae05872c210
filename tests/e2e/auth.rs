//! TLS, principals and permissions, end to end (issue 13, points 1, 2 and 8): real
//! coordinators, workers and `meshctl` with certificates and tokens the tests make.
//!
//! Every refusal is checked on both ports: UNAUTHENTICATED / 401 for no token or an
//! unknown one, PERMISSION_DENIED / 403 for a caller without the permission (a worker
//! joining as a role it may not serve, a read-only client creating or cancelling). Each
//! test ends by searching every log and output of its processes for the tokens it used.

use agentmesh_discovery::ClientCredentials;
use agentmesh_e2e::pki::{Ca, CertFiles, auth_file, fresh_token, https_request};
use agentmesh_e2e::{CoordinatorOpts, Proc, bin, http_get, log_dir, start_coordinator, tail};
use agentmesh_proto::v1::session_service_client::SessionServiceClient;
use agentmesh_proto::v1::worker_service_client::WorkerServiceClient;
use agentmesh_proto::v1::{self, worker_message};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
struct Bearer(Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            let value = format!("Bearer {token}").parse().expect("ascii token");
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

type Client = SessionServiceClient<InterceptedService<Channel, Bearer>>;

/// A test's directory, tokens and the secrets its logs must never hold.
struct Fixture {
    dir: PathBuf,
    secrets: Vec<String>,
    rt: tokio::runtime::Runtime,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir = log_dir().join(format!("auth-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        Fixture {
            dir,
            secrets: Vec::new(),
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    fn token(&mut self, label: &str) -> String {
        let token = fresh_token(label);
        self.secrets.push(token.clone());
        token
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn token_file(&self, token: &str) -> PathBuf {
        self.write(&format!("token-{}", &token[..token.len().min(12)]), token)
    }

    /// A gRPC client of `url` presenting `token` (and, over TLS, trusting `ca` and
    /// presenting `cert`).
    fn client(
        &self,
        url: &str,
        token: Option<&str>,
        ca: Option<&Path>,
        cert: Option<&CertFiles>,
    ) -> Result<Client, String> {
        let credentials = ClientCredentials::tls_only(
            ca.map(Path::to_path_buf),
            cert.map(|c| c.cert.clone()),
            cert.map(|c| c.key.clone()),
        );
        let endpoint = credentials.endpoint(url)?;
        let channel = self
            .rt
            .block_on(endpoint.connect())
            .map_err(|e| format!("{e:?}"))?;
        Ok(SessionServiceClient::with_interceptor(
            channel,
            Bearer(token.map(str::to_string)),
        ))
    }

    fn list(&self, client: &mut Client) -> Result<usize, tonic::Status> {
        self.rt
            .block_on(client.list_sessions(v1::ListSessionsRequest {}))
            .map(|r| r.into_inner().sessions.len())
    }

    fn create(&self, client: &mut Client, roles: &[&str]) -> Result<v1::Session, tonic::Status> {
        self.rt
            .block_on(client.create_session(v1::CreateSessionRequest {
                task: "Design an order-tracking service".into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                ..Default::default()
            }))
            .map(|r| r.into_inner())
    }

    fn cancel(&self, client: &mut Client, id: &str) -> Result<v1::Session, tonic::Status> {
        self.rt
            .block_on(client.cancel_session(v1::CancelSessionRequest {
                session_id: id.into(),
                reason: "test".into(),
            }))
            .map(|r| r.into_inner())
    }

    fn workers(&self, client: &mut Client) -> Vec<String> {
        let mut ids: Vec<String> = self
            .rt
            .block_on(client.list_workers(v1::ListWorkersRequest {}))
            .map(|r| {
                r.into_inner()
                    .workers
                    .into_iter()
                    .map(|w| w.worker_id)
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    fn wait_workers(&self, client: &mut Client, want: &[&str], procs: &[&Proc]) {
        let start = Instant::now();
        loop {
            let have = self.workers(client);
            if have == want {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "workers {have:?}, want {want:?}\n{}",
                logs(procs)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Checks that no process log, and no output given, holds any of this test's tokens.
    fn assert_no_secret_in(&self, procs: &[&Proc], outputs: &[&Output]) {
        let mut texts: Vec<(String, String)> = procs
            .iter()
            .map(|p| (p.name.clone(), p.log_text()))
            .collect();
        for (i, out) in outputs.iter().enumerate() {
            texts.push((
                format!("output {i}"),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ));
        }
        for secret in &self.secrets {
            for (name, text) in &texts {
                assert!(
                    !text.contains(secret.as_str()),
                    "{name} shows a token:\n{}",
                    tail(text, 20)
                );
            }
        }
    }
}

fn logs(procs: &[&Proc]) -> String {
    procs
        .iter()
        .map(|p| format!("--- {} ---\n{}", p.name, tail(&p.log_text(), 15)))
        .collect()
}

fn code(result: Result<impl Sized, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

fn worker(name: &str, role: &str, url: &str, extra: &[String]) -> Proc {
    let mut args = vec![
        "--role".to_string(),
        role.to_string(),
        "--id".to_string(),
        name.to_string(),
        "--coordinator".to_string(),
        url.to_string(),
    ];
    args.extend(extra.iter().cloned());
    Proc::spawn(name, &bin("mesh-worker"), &args)
}

fn meshctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(bin("meshctl"));
    command
        .args(args)
        .stdin(Stdio::null())
        .env_remove("MESH_TOKEN");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run meshctl")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A raw HTTP/1.0 request with extra header lines.
fn request(method: &str, target: &str, headers: &[String], body: &str) -> String {
    let mut text = format!("{method} {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    if !body.is_empty() {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// The status line and headers of a streaming response (an SSE stream never ends).
fn head_of(addr: &str, raw: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(raw.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = tcp.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn grpc_callers_and_workers_need_a_known_token_and_the_permission() {
    let mut f = Fixture::new("grpc");
    let reader = f.token("reader");
    let writer = f.token("writer");
    let backend = f.token("backend");
    let supervisor = f.token("supervisor");
    let auth = f.write(
        "auth.toml",
        &auth_file(&[
            ("reader", &reader, &["sessions:read"]),
            ("writer", &writer, &["sessions:write"]),
            ("backend-pool", &backend, &["worker:backend"]),
            ("supervisors", &supervisor, &["worker:supervisor"]),
        ]),
    );
    let opts = CoordinatorOpts {
        extra: vec!["--auth-file".into(), path(&auth)],
        ..CoordinatorOpts::default()
    };
    let (coordinator, addr, _) = start_coordinator("127.0.0.1:0", &opts);
    let url = format!("http://{addr}");

    // Clients: no token and an unknown token are UNAUTHENTICATED, on unary calls and
    // on a watch; a reader reads but may neither create nor cancel.
    let mut anonymous = f.client(&url, None, None, None).unwrap();
    assert_eq!(code(f.list(&mut anonymous)), Code::Unauthenticated);
    let watch =
        f.rt.block_on(anonymous.watch_mesh(v1::WatchMeshRequest { from_seq: 0 }));
    assert_eq!(code(watch), Code::Unauthenticated);
    let mut unknown = f
        .client(&url, Some("not-a-token-anyone-issued"), None, None)
        .unwrap();
    let refused = f.list(&mut unknown).unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(!refused.message().contains("not-a-token"), "{refused:?}");
    let mut read_only = f.client(&url, Some(&reader), None, None).unwrap();
    assert_eq!(f.list(&mut read_only).unwrap(), 0);
    let denied = f.create(&mut read_only, &["backend"]).unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("sessions:write"), "{denied:?}");
    let mut read_write = f.client(&url, Some(&writer), None, None).unwrap();
    let pending = f.create(&mut read_write, &["security"]).unwrap();
    assert_eq!(
        code(f.cancel(&mut read_only, &pending.id)),
        Code::PermissionDenied
    );
    assert_eq!(code(f.cancel(&mut read_write, &pending.id)), Code::Ok);
    assert_eq!(
        f.list(&mut read_only).unwrap(),
        1,
        "the refused create made nothing"
    );

    // Workers: one without a token and one enrolled for backend joining as security are
    // refused; the enrolled ones join.
    let backend_file = path(&f.token_file(&backend));
    let supervisor_file = path(&f.token_file(&supervisor));
    let intruder = worker("intruder", "backend", &url, &[]);
    let impostor = worker(
        "impostor",
        "security",
        &url,
        &["--token-file".into(), backend_file.clone()],
    );
    let b1 = worker(
        "backend-1",
        "backend",
        &url,
        &["--token-file".into(), backend_file.clone()],
    );
    let s1 = worker(
        "supervisor-1",
        "supervisor",
        &url,
        &["--token-file".into(), supervisor_file],
    );
    let procs = [&coordinator, &intruder, &impostor, &b1, &s1];
    f.wait_workers(&mut read_only, &["backend-1", "supervisor-1"], &procs);
    intruder.wait_for_log("Unauthenticated", Duration::from_secs(10));
    impostor.wait_for_log("PermissionDenied", Duration::from_secs(10));
    assert!(
        impostor.log_text().contains("needs worker:security"),
        "{}",
        impostor.log_text()
    );

    // A stream admitted for backend whose Hello names security is refused by the worker
    // edge: the role in the metadata is the one the gate authorized.
    let attach = f.rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = WorkerServiceClient::new(channel);
        let hello = v1::WorkerMessage {
            msg: Some(worker_message::Msg::Hello(v1::Hello {
                role: "security".into(),
                worker_id: "switcher".into(),
                capacity: 1,
                ..Default::default()
            })),
        };
        let mut request = tonic::Request::new(futures_stream(hello));
        request
            .metadata_mut()
            .insert("x-agentmesh-role", "backend".parse().unwrap());
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {backend}").parse().unwrap(),
        );
        client.attach(request).await.map(|_| ())
    });
    let switched = attach.unwrap_err();
    assert_eq!(switched.code(), Code::PermissionDenied, "{switched:?}");
    assert!(
        switched.message().contains("Hello names \"security\""),
        "{switched:?}"
    );

    // meshctl: MESH_TOKEN and --token-file; a reader's run is refused, a writer's runs
    // to consensus.
    let addr_flag = ["--coordinator", url.as_str()];
    let none = meshctl(
        &[&addr_flag[..], &["--wait", "0", "sessions"]].concat(),
        &[],
    );
    assert_eq!(none.status.code(), Some(1));
    assert!(
        stderr(&none).contains("Unauthenticated"),
        "{}",
        stderr(&none)
    );
    let refused = meshctl(
        &[
            &addr_flag[..],
            &["run", "Design a cache", "--roles", "backend"],
        ]
        .concat(),
        &[("MESH_TOKEN", &reader)],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("PermissionDenied"),
        "{}",
        stderr(&refused)
    );
    let writer_file = path(&f.token_file(&writer));
    let run = meshctl(
        &[
            &addr_flag[..],
            &[
                "--token-file",
                &writer_file,
                "run",
                "Design a cache",
                "--roles",
                "backend",
            ],
        ]
        .concat(),
        &[],
    );
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&run),
        logs(&procs)
    );
    let listed = meshctl(
        &[&addr_flag[..], &["sessions"]].concat(),
        &[("MESH_TOKEN", &reader)],
    );
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    f.assert_no_secret_in(&procs, &[&none, &refused, &run, &listed]);
}

/// A request stream holding one message, then open (the worker never says more).
fn futures_stream(first: v1::WorkerMessage) -> impl tokio_stream::Stream<Item = v1::WorkerMessage> {
    use tokio_stream::StreamExt;
    tokio_stream::once(first).chain(tokio_stream::pending())
}

#[test]
fn the_http_api_sse_and_dashboard_answer_401_and_403() {
    let mut f = Fixture::new("http");
    let reader = f.token("reader");
    let writer = f.token("writer");
    let auth = f.write(
        "auth.toml",
        &auth_file(&[
            ("reader", &reader, &["sessions:read"]),
            ("writer", &writer, &["sessions:write"]),
        ]),
    );
    let opts = CoordinatorOpts {
        extra: vec!["--auth-file".into(), path(&auth)],
        ..CoordinatorOpts::default()
    };
    let (coordinator, _, http) = start_coordinator("127.0.0.1:0", &opts);
    let http = http.unwrap();
    let send = |raw: String| https_request(&http, None, None, &raw).unwrap();
    let task = r#"{"task":"Design a cache","roles":["backend"]}"#;
    let json = "Content-Type: application/json".to_string();

    // The API: 401 without a token or with an unknown one, 403 for a reader's writes.
    assert_eq!(send(request("GET", "/api/sessions", &[], "")).0, 401);
    let (status, _, body) = send(request(
        "GET",
        "/api/sessions",
        &[bearer("nobody-issued-this")],
        "",
    ));
    assert_eq!(status, 401);
    assert!(body.contains("not known"), "{body}");
    assert_eq!(
        send(request("GET", "/api/sessions", &[bearer(&reader)], "")).0,
        200
    );
    let (status, _, body) = send(request(
        "POST",
        "/api/sessions",
        &[bearer(&reader), json.clone()],
        task,
    ));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("sessions:write"), "{body}");
    let (status, _, body) = send(request(
        "POST",
        "/api/sessions",
        &[bearer(&writer), json.clone()],
        task,
    ));
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .expect("session id")
        .to_string();
    let cancel = format!("/api/sessions/{id}/cancel");
    assert_eq!(
        send(request("POST", &cancel, &[bearer(&reader)], "")).0,
        403
    );
    assert_eq!(send(request("POST", &cancel, &[], "")).0, 401);
    assert_eq!(
        send(request("POST", &cancel, &[bearer(&writer)], "")).0,
        200
    );
    let (_, _, me) = send(request("GET", "/api/whoami", &[bearer(&reader)], ""));
    assert!(
        me.contains("\"can_write\":false") && me.contains("\"name\":\"reader\""),
        "{me}"
    );

    // SSE: refused the same way; a reader gets the stream.
    assert_eq!(
        head_of(&http, &request("GET", "/api/events", &[], "")).0,
        401
    );
    assert_eq!(
        head_of(
            &http,
            &request(
                "GET",
                &format!("/api/sessions/{id}/events"),
                &[bearer("nope")],
                ""
            )
        )
        .0,
        401
    );
    let (status, head) = head_of(
        &http,
        &request("GET", "/api/events", &[bearer(&reader)], ""),
    );
    assert_eq!(status, 200);
    assert!(head.contains("text/event-stream"), "{head}");

    // The dashboard: the login page (401) until a known token is given; then an
    // HttpOnly, SameSite=Strict cookie that the page, the API and SSE accept; its start
    // form (POST /api/sessions) needs sessions:write.
    let (status, _, page) = send(request("GET", "/", &[], ""));
    assert_eq!(status, 401);
    assert!(page.contains("id=\"login-form\""), "{page}");
    assert_eq!(http_get(&http, "/app.js").map(|r| r.0), Some(200));
    let form = "Content-Type: application/x-www-form-urlencoded".to_string();
    let (status, _, page) = send(request(
        "POST",
        "/login",
        std::slice::from_ref(&form),
        "token=guessed-wrong",
    ));
    assert_eq!(status, 401);
    assert!(
        page.contains("not known") && !page.contains("guessed-wrong"),
        "{page}"
    );
    let login = |token: &str| {
        let (status, head, _) = send(request(
            "POST",
            "/login",
            std::slice::from_ref(&form),
            &format!("token={token}"),
        ));
        assert_eq!(status, 303, "{head}");
        let cookie = head
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .expect("a cookie")
            .to_string();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        format!("Cookie: {}", cookie.split(';').next().unwrap())
    };
    let reader_cookie = login(&reader);
    let (status, _, page) = send(request(
        "GET",
        "/",
        std::slice::from_ref(&reader_cookie),
        "",
    ));
    assert_eq!(status, 200);
    assert!(page.contains("/app.js"), "{page}");
    assert_eq!(
        head_of(
            &http,
            &request(
                "GET",
                "/api/events",
                std::slice::from_ref(&reader_cookie),
                ""
            )
        )
        .0,
        200
    );
    let (status, _, body) = send(request(
        "POST",
        "/api/sessions",
        &[reader_cookie.clone(), json.clone()],
        task,
    ));
    assert_eq!(status, 403, "the start form needs sessions:write: {body}");
    let writer_cookie = login(&writer);
    assert_eq!(
        send(request(
            "POST",
            "/api/sessions",
            &[writer_cookie, json],
            task
        ))
        .0,
        201
    );
    let stale = "Cookie: agentmesh_token=revoked-or-forgotten".to_string();
    let (status, _, page) = send(request("GET", "/", &[stale], ""));
    assert_eq!(status, 401);
    assert!(page.contains("no longer valid"), "{page}");
    // Probes and metrics stay open (kubelets and Prometheus carry no token).
    assert_eq!(http_get(&http, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http_get(&http, "/metrics").map(|r| r.0), Some(200));
    f.assert_no_secret_in(&[&coordinator], &[]);
}

#[test]
fn without_auth_a_coordinator_says_it_is_open_and_refuses_to_listen_beyond_loopback() {
    let (coordinator, _, _) = start_coordinator("127.0.0.1:0", &CoordinatorOpts::default());
    coordinator.wait_for_log("open to anyone who can reach", Duration::from_secs(5));
    let refused = Command::new(bin("mesh-coordinator"))
        .args(["--listen", "0.0.0.0:0", "--http", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let why = stderr(&refused);
    assert!(
        why.contains("refusing to listen on 0.0.0.0:") && why.contains("--insecure"),
        "{why}"
    );
    let opts = CoordinatorOpts {
        extra: vec!["--insecure".into()],
        ..CoordinatorOpts::default()
    };
    let (insecure, _, _) = start_coordinator("0.0.0.0:0", &opts);
    insecure.wait_for_log("--insecure: no authentication", Duration::from_secs(5));
}

/// TLS on both ports, mTLS with SPIFFE worker identities, and a SIGHUP that swaps the
/// certificate and the tokens while a worker stream and a watch stay open.
#[test]
fn tls_and_client_certificates_with_a_reload_that_drops_no_stream() {
    let mut f = Fixture::new("tls");
    let ca = Ca::new(&f.dir, "one");
    let server = ca.issue("server", true, &[]);
    let security = ca.issue(
        "security-worker",
        false,
        &["spiffe://agentmesh/agentmesh/worker/security"],
    );
    let supervisor = ca.issue(
        "supervisor-worker",
        false,
        &["spiffe://agentmesh/agentmesh/worker/supervisor"],
    );
    let foreign = ca.issue(
        "foreign",
        false,
        &["spiffe://elsewhere/agentmesh/worker/security"],
    );
    let other_ca = Ca::new(&f.dir, "other");
    let stranger = other_ca.issue(
        "stranger",
        false,
        &["spiffe://agentmesh/agentmesh/worker/security"],
    );
    let reader = f.token("reader");
    let auth = f.write(
        "auth.toml",
        &auth_file(&[("reader", &reader, &["sessions:read", "sessions:write"])]),
    );
    let opts = CoordinatorOpts {
        extra: vec![
            "--auth-file".into(),
            path(&auth),
            "--tls-cert".into(),
            path(&server.cert),
            "--tls-key".into(),
            path(&server.key),
            "--tls-client-ca".into(),
            path(&ca.pem_path),
        ],
        ..CoordinatorOpts::default()
    };
    let (coordinator, addr, http) = start_coordinator("127.0.0.1:0", &opts);
    let http = http.unwrap();
    let url = format!("https://{addr}");
    let ca_pem = ca.pem_path.clone();

    // Clients must trust the CA; then the token works as on plain TCP.
    let untrusting = f.client(&url, Some(&reader), None, None);
    assert!(untrusting.is_err() || code(f.list(&mut untrusting.unwrap())) == Code::Unavailable);
    let mut client = f.client(&url, Some(&reader), Some(&ca_pem), None).unwrap();
    assert_eq!(f.list(&mut client).unwrap(), 0);
    let mut no_token = f.client(&url, None, Some(&ca_pem), None).unwrap();
    assert_eq!(code(f.list(&mut no_token)), Code::Unauthenticated);
    let (status, _, me) = https_request(
        &http,
        Some(&ca_pem),
        None,
        &request("GET", "/api/whoami", &[bearer(&reader)], ""),
    )
    .unwrap();
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        https_request(
            &http,
            Some(&ca_pem),
            None,
            &request("GET", "/api/sessions", &[], "")
        )
        .unwrap()
        .0,
        401
    );
    assert!(
        http_get(&http, "/healthz").is_none_or(|(code, _)| code != 200),
        "plain HTTP is not served"
    );

    // Workers by certificate: the SPIFFE ID names the role it may serve.
    let tls_args = |cert: &CertFiles| {
        vec![
            "--tls-ca".to_string(),
            path(&ca_pem),
            "--tls-cert".to_string(),
            path(&cert.cert),
            "--tls-key".to_string(),
            path(&cert.key),
        ]
    };
    let w_security = worker("security-1", "security", &url, &tls_args(&security));
    let w_supervisor = worker("supervisor-1", "supervisor", &url, &tls_args(&supervisor));
    let w_wrong_role = worker("security-as-backend", "backend", &url, &tls_args(&security));
    let w_foreign = worker("foreign-domain", "security", &url, &tls_args(&foreign));
    let w_stranger = worker("stranger", "security", &url, &tls_args(&stranger));
    let procs = [
        &coordinator,
        &w_security,
        &w_supervisor,
        &w_wrong_role,
        &w_foreign,
        &w_stranger,
    ];
    f.wait_workers(&mut client, &["security-1", "supervisor-1"], &procs);
    w_wrong_role.wait_for_log("PermissionDenied", Duration::from_secs(10));
    w_foreign.wait_for_log("Unauthenticated", Duration::from_secs(10));
    w_stranger.wait_for_log("disconnected; reconnecting", Duration::from_secs(10));
    // The dashboard's whoami with a client certificate and no token.
    let (status, _, me) = https_request(
        &http,
        Some(&ca_pem),
        Some(&security),
        &request("GET", "/api/whoami", &[], ""),
    )
    .unwrap();
    assert_eq!(
        status, 403,
        "a worker's certificate may not read sessions: {me}"
    );

    // An open watch and an open worker stream, then SIGHUP with a new certificate (from
    // a new CA), a new token and the old one removed.
    let mut watcher = f.client(&url, Some(&reader), Some(&ca_pem), None).unwrap();
    let mut events =
        f.rt.block_on(watcher.watch_mesh(v1::WatchMeshRequest { from_seq: 0 }))
            .unwrap()
            .into_inner();
    let renewed_ca = Ca::new(&f.dir, "renewed");
    let renewed = renewed_ca.issue("server-renewed", true, &[]);
    std::fs::copy(&renewed.cert, &server.cert).unwrap();
    std::fs::copy(&renewed.key, &server.key).unwrap();
    let successor = f.token("successor");
    std::fs::write(
        &auth,
        auth_file(&[("successor", &successor, &["sessions:write"])]),
    )
    .unwrap();
    coordinator.signal("HUP");
    coordinator.wait_for_log("SIGHUP: reloaded", Duration::from_secs(5));

    // New connections see the new certificate and the new tokens ...
    let old_trust = f.client(&url, Some(&successor), Some(&ca_pem), None);
    assert!(old_trust.is_err() || code(f.list(&mut old_trust.unwrap())) == Code::Unavailable);
    let renewed_pem = renewed_ca.pem_path.clone();
    let mut fresh = f
        .client(&url, Some(&successor), Some(&renewed_pem), None)
        .unwrap();
    assert_eq!(f.list(&mut fresh).unwrap(), 0);
    let mut revoked = f
        .client(&url, Some(&reader), Some(&renewed_pem), None)
        .unwrap();
    assert_eq!(
        code(f.list(&mut revoked)),
        Code::Unauthenticated,
        "the removed token is refused at once"
    );
    // ... while the open streams carry on: the watch sees a session created now, and the
    // workers, connected before, serve it to the end.
    let session = f.create(&mut fresh, &["security"]).unwrap();
    let seen = f.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = events.message().await.transpose() {
                if let Ok(v1::MeshEvent {
                    event: Some(v1::mesh_event::Event::SessionCreated(s)),
                    ..
                }) = event
                    && s.id == session.id
                {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false)
    });
    assert!(
        seen,
        "the watch opened before the reload saw the new session"
    );
    let start = Instant::now();
    loop {
        let s =
            f.rt.block_on(fresh.get_session(v1::GetSessionRequest {
                session_id: session.id.clone(),
            }))
            .unwrap()
            .into_inner();
        if s.status == v1::SessionStatus::Consensus as i32 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "session {s:?}\n{}",
            logs(&procs)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !w_security.log_text().contains("disconnected"),
        "{}",
        w_security.log_text()
    );
    assert_eq!(
        f.workers(&mut fresh)[..2],
        ["security-1".to_string(), "supervisor-1".to_string()]
    );
    // meshctl over TLS with the new CA and a token file.
    let successor_file = path(&f.token_file(&successor));
    let shown = meshctl(
        &[
            "--coordinator",
            &url,
            "--tls-ca",
            &path(&renewed_pem),
            "--token-file",
            &successor_file,
            "show",
            &session.id,
        ],
        &[],
    );
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    f.assert_no_secret_in(&procs, &[&shown]);
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// etcd over TLS, client certificates required, with user `root` (auth enabled).
fn secure_etcd(f: &Fixture, ca: &Ca, password: &str) -> (Proc, String, CertFiles) {
    let etcd = match agentmesh_etcd_testkit::find_etcd() {
        Ok(path) => path,
        Err(why) => panic!("etcd is needed for this test: {why}"),
    };
    let server = ca.issue("etcd-server", true, &[]);
    let client = ca.issue("etcd-client", false, &[]);
    let (client_port, peer_port) = (free_port(), free_port());
    let endpoint = format!("https://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let args: Vec<String> = [
        "--name",
        "auth",
        "--data-dir",
        &path(&f.dir.join("etcd-data")),
        "--listen-client-urls",
        &endpoint,
        "--advertise-client-urls",
        &endpoint,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &format!("auth={peer}"),
        "--initial-cluster-state",
        "new",
        "--cert-file",
        &path(&server.cert),
        "--key-file",
        &path(&server.key),
        "--client-cert-auth",
        "--trusted-ca-file",
        &path(&ca.pem_path),
        "--heartbeat-interval",
        "50",
        "--election-timeout",
        "500",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let proc = Proc::spawn("etcd", &etcd, &args);
    // Turn etcd's users on: root with a password.
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(
            std::fs::read(&ca.pem_path).unwrap(),
        ))
        .identity(etcd_client::Identity::from_pem(
            std::fs::read(&client.cert).unwrap(),
            std::fs::read(&client.key).unwrap(),
        ));
    let start = Instant::now();
    f.rt.block_on(async {
        loop {
            let options = etcd_client::ConnectOptions::new()
                .with_tls(tls.clone())
                .with_connect_timeout(Duration::from_secs(2));
            let connected = etcd_client::Client::connect([endpoint.clone()], Some(options)).await;
            let up = match connected {
                Ok(mut c) => c.status().await.is_ok().then_some(c),
                Err(_) => None,
            };
            match up {
                Some(mut c) => {
                    c.user_add("root", password, None).await.expect("add root");
                    c.user_grant_role("root", "root").await.expect("grant root");
                    c.auth_enable().await.expect("enable auth");
                    return;
                }
                None if start.elapsed() > Duration::from_secs(20) => {
                    panic!("TLS etcd did not come up:\n{}", proc.log_text())
                }
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    (proc, endpoint, client)
}

fn readyz(http: &str, ca: &Path) -> Option<String> {
    https_request(http, Some(ca), None, &request("GET", "/readyz", &[], ""))
        .ok()
        .map(|(_, _, body)| body)
}

/// Point 8's last threat and the cluster's own security: etcd over TLS with client
/// certificates and a user; two coordinators over mTLS. A standby authenticates before it
/// forwards (an unauthenticated call, or a token only the leader knows, is refused by
/// the standby itself), forwards tokens unchanged (the leader authorizes), and vouches
/// for a caller known by its certificate; nobody else can.
#[test]
fn a_standby_authenticates_before_forwarding_and_the_leader_authorizes() {
    let mut f = Fixture::new("standby");
    let ca = Ca::new(&f.dir, "cluster");
    let password = f.token("etcd-password");
    let password_file = f.write("etcd-password", &password);
    let (etcd, endpoint, etcd_client_cert) = secure_etcd(&f, &ca, &password);
    let leader_only = f.token("leader-only");
    let writer = f.token("writer");
    let split = f.token("split");
    let ops = "spiffe://agentmesh/agentmesh/client/ops";
    let worker_token = f.token("workers");
    let common: Vec<(&str, &str, &[&str])> = vec![
        ("writer", &writer, &["sessions:write"]),
        ("ops", ops, &["sessions:write"]),
        ("workers", &worker_token, &["worker:*"]),
    ];
    let mut leader_principals = common.clone();
    leader_principals.push(("leader-only", &leader_only, &["sessions:read"]));
    leader_principals.push(("split", &split, &["sessions:read"]));
    let mut standby_principals = common.clone();
    standby_principals.push(("split", &split, &["admin"]));
    let leader_auth = f.write("leader-auth.toml", &auth_file(&leader_principals));
    let standby_auth = f.write("standby-auth.toml", &auth_file(&standby_principals));
    let etcd_flags = vec![
        "--etcd".to_string(),
        endpoint.clone(),
        "--etcd-ca".into(),
        path(&ca.pem_path),
        "--etcd-cert".into(),
        path(&etcd_client_cert.cert),
        "--etcd-key".into(),
        path(&etcd_client_cert.key),
        "--etcd-user".into(),
        "root".into(),
        "--etcd-password-file".into(),
        path(&password_file),
    ];
    let coordinator = |id: &str, auth: &Path| {
        let cert = ca.issue(id, true, &["spiffe://agentmesh/agentmesh/coordinator"]);
        let mut extra = vec![
            "--id".to_string(),
            id.into(),
            "--auth-file".into(),
            path(auth),
            "--tls-cert".into(),
            path(&cert.cert),
            "--tls-key".into(),
            path(&cert.key),
            "--tls-client-ca".into(),
            path(&ca.pem_path),
            "--tls-ca".into(),
            path(&ca.pem_path),
        ];
        extra.extend(etcd_flags.iter().cloned());
        start_coordinator(
            "127.0.0.1:0",
            &CoordinatorOpts {
                extra,
                ..CoordinatorOpts::default()
            },
        )
    };
    let ca_pem = ca.pem_path.clone();
    let wait_ready = |http: &str, want: &str, procs: &[&Proc]| {
        let start = Instant::now();
        while readyz(http, &ca_pem).as_deref() != Some(want) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{http} not {want}\n{}",
                logs(procs)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (leader, leader_addr, leader_http) = coordinator("c1", &leader_auth);
    wait_ready(
        leader_http.as_deref().unwrap(),
        "leader\n",
        &[&leader, &etcd],
    );
    let (standby, standby_addr, standby_http) = coordinator("c2", &standby_auth);
    let standby_http = standby_http.unwrap();
    wait_ready(&standby_http, "standby\n", &[&standby, &etcd]);
    let standby_url = format!("https://{standby_addr}");
    let leader_url = format!("https://{leader_addr}");

    // gRPC through the standby.
    let mut anonymous = f.client(&standby_url, None, Some(&ca_pem), None).unwrap();
    let refused = f.list(&mut anonymous).unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let mut only_leader_knows = f
        .client(&standby_url, Some(&leader_only), Some(&ca_pem), None)
        .unwrap();
    assert_eq!(
        code(f.list(&mut only_leader_knows)),
        Code::Unauthenticated,
        "the standby itself refuses"
    );
    let mut direct = f
        .client(&leader_url, Some(&leader_only), Some(&ca_pem), None)
        .unwrap();
    assert_eq!(
        f.list(&mut direct).unwrap(),
        0,
        "the leader knows that token"
    );
    let mut split_view = f
        .client(&standby_url, Some(&split), Some(&ca_pem), None)
        .unwrap();
    assert_eq!(
        code(f.create(&mut split_view, &["backend"])),
        Code::PermissionDenied,
        "the leader authorizes"
    );
    assert_eq!(f.list(&mut split_view).unwrap(), 0);
    let mut via_standby = f
        .client(&standby_url, Some(&writer), Some(&ca_pem), None)
        .unwrap();
    assert_eq!(
        code(f.create(&mut via_standby, &["backend"])).clone(),
        Code::Ok
    );
    // A caller known by its certificate: the standby vouches, the leader believes it.
    let ops_cert = ca.issue("ops", false, &[ops]);
    let mut by_certificate = f
        .client(&standby_url, None, Some(&ca_pem), Some(&ops_cert))
        .unwrap();
    assert_eq!(code(f.create(&mut by_certificate, &["backend"])), Code::Ok);
    // Nobody but a coordinator can vouch: a forged header to the leader changes nothing.
    let forged = f.rt.block_on(async {
        let channel = ClientCredentials::tls_only(Some(ca_pem.clone()), None, None)
            .endpoint(&leader_url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = SessionServiceClient::new(channel);
        let mut request = tonic::Request::new(v1::CreateSessionRequest {
            task: "x".into(),
            ..Default::default()
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {leader_only}").parse().unwrap(),
        );
        request
            .metadata_mut()
            .insert("x-agentmesh-caller", ops.parse().unwrap());
        client.create_session(request).await.map(|_| ())
    });
    assert_eq!(code(forged), Code::PermissionDenied);

    // HTTP through the standby: 401 before forwarding, the token forwarded, and the
    // certificate identity vouched for.
    let get = |token: Option<&str>, cert: Option<&CertFiles>, target: &str| {
        let headers: Vec<String> = token.map(bearer).into_iter().collect();
        https_request(
            &standby_http,
            Some(&ca_pem),
            cert,
            &request("GET", target, &headers, ""),
        )
        .unwrap()
    };
    assert_eq!(get(None, None, "/api/sessions").0, 401);
    assert_eq!(get(Some(&leader_only), None, "/api/sessions").0, 401);
    let (status, _, body) = get(Some(&writer), None, "/api/sessions");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let (status, _, me) = get(None, Some(&ops_cert), "/api/whoami");
    assert_eq!(status, 200, "{me}");
    assert!(
        me.contains("vouched for by spiffe://agentmesh/agentmesh/coordinator"),
        "{me}"
    );

    // Workers and meshctl find the leader through the TLS etcd with its user, and a
    // session runs to consensus.
    let worker_file = path(&f.token_file(&worker_token));
    let mut worker_args = etcd_flags.clone();
    worker_args.extend([
        "--tls-ca".into(),
        path(&ca_pem),
        "--token-file".into(),
        worker_file.clone(),
        "--lease-ttl".into(),
        "2".into(),
    ]);
    let w1 = worker(
        "supervisor-1",
        "supervisor",
        "https://127.0.0.1:1",
        &worker_args,
    );
    let w2 = worker("backend-1", "backend", "https://127.0.0.1:1", &worker_args);
    let procs = [&etcd, &leader, &standby, &w1, &w2];
    let mut admin_view = f
        .client(&leader_url, Some(&writer), Some(&ca_pem), None)
        .unwrap();
    f.wait_workers(&mut admin_view, &["backend-1", "supervisor-1"], &procs);
    let writer_file = path(&f.token_file(&writer));
    let mut args: Vec<String> = etcd_flags.clone();
    args.extend([
        "--tls-ca".into(),
        path(&ca_pem),
        "--token-file".into(),
        writer_file,
        "run".into(),
        "Design a cache".into(),
        "--roles".into(),
        "backend".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = meshctl(&args, &[]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&run),
        logs(&procs)
    );
    f.assert_no_secret_in(&procs, &[&run]);
}
