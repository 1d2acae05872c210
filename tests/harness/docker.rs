//! The container tests' harness: the compose cluster of `deploy/compose/` (3 etcd
//! members, 3 coordinators, a worker per role and a second backend) under a project name
//! of its own, on ephemeral loopback ports, and the faults the tests inject into it.
//!
//! # Layout
//!
//! - [`docker_answers`]: whether a Docker engine answers; [`require_images`]: the images
//!   `make images` builds, at this workspace's version.
//! - [`Mesh`]: one compose project. [`Mesh::up`] starts it and waits until a coordinator
//!   leads and every worker holds a stream and a lease; dropping it runs
//!   `docker-compose down -v` (also when the test fails, after printing the containers'
//!   logs). Faults: [`Mesh::kill`], [`Mesh::stop`], [`Mesh::start`],
//!   [`Mesh::disconnect`] / [`Mesh::connect`], [`Mesh::recreate`].
//! - [`Locator`]: where a project's services are published right now (ports change when
//!   a container restarts), which coordinator leads, which etcd member leads raft.
//! - [`Watch`]: a session's durable events, followed across leader changes.
//!
//! Names: the project is `agentmesh-t<pid>-<n>`, so its network (`<project>_mesh`),
//! containers (`<project>_<service>_1`) and volumes are this test's own. Every docker
//! command has a time limit; every wait is bounded; the only addresses used are
//! 127.0.0.1 and the project's own containers.
//!
//! Security is on as `make cluster-up` starts it: each project draws its own tokens,
//! certificates and signing keys with `scripts/compose-secrets.sh` ([`Locator::secrets`]),
//! the coordinators serve TLS only (every client here checks them against
//! [`Locator::ca`]), and etcd wants TLS with a client certificate ([`Locator::etcd_get`]).

use crate::pki::{CertFiles, https_request};
use crate::{is_terminal, tail};
use agentmesh_discovery::ClientCredentials;
use agentmesh_proto::v1::session_service_client::SessionServiceClient;
use agentmesh_proto::v1::{self, session_event};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The compose file, relative to the repository root.
pub const COMPOSE_FILE: &str = "deploy/compose/docker-compose.yml";
pub const COORDINATORS: [&str; 3] = ["coordinator1", "coordinator2", "coordinator3"];
pub const ETCD_MEMBERS: [&str; 3] = ["etcd1", "etcd2", "etcd3"];
/// Worker services; each worker's id is its service name.
pub const WORKERS: [&str; 8] = [
    "supervisor",
    "backend1",
    "backend2",
    "frontend",
    "security",
    "architect",
    "devops",
    "database",
];
const GRPC_PORT: u16 = 7700;
const HTTP_PORT: u16 = 7780;
const ETCD_PORT: u16 = 2379;
/// The images' version tag: the workspace version (`make images` tags it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long one docker or docker-compose command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// Runs `cmd` with a time limit, capturing its output; kills it (by pid) when late.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what}: no answer within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// `Ok` when a Docker engine answers and docker-compose is installed; why not otherwise.
pub fn docker_answers() -> Result<(), String> {
    match run(
        Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]),
        Duration::from_secs(20),
    ) {
        Err(e) => return Err(format!("docker: {e}")),
        Ok(out) if !out.status.success() => {
            return Err(format!("docker info failed: {}", text(&out.stderr)));
        }
        Ok(_) => {}
    }
    match run(
        Command::new("docker-compose").arg("version"),
        Duration::from_secs(20),
    ) {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("docker-compose failed: {}", text(&out.stderr))),
        Err(e) => Err(format!("docker-compose: {e}")),
    }
}

/// The images the compose file names. Panics, naming `make images`, when one is missing
/// or was built from another version.
pub fn require_images() {
    for repo in ["agentmesh/coordinator", "agentmesh/worker"] {
        let image = format!("{repo}:{VERSION}");
        let out = run(
            Command::new("docker").args([
                "image",
                "inspect",
                "-f",
                "{{index .Config.Labels \"org.opencontainers.image.version\"}}",
                &image,
            ]),
            COMMAND_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "image {image} is missing: run `make images`"
        );
        assert_eq!(
            text(&out.stdout),
            VERSION,
            "image {image} is labelled with another version: run `make images`"
        );
    }
    let out = run(
        Command::new("docker").args(["image", "inspect", "agentmesh/etcd:latest"]),
        COMMAND_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "image agentmesh/etcd:latest is missing: run `make images`"
    );
}

/// What a test changes in the compose file's defaults (through its variables).
#[derive(Clone, Debug)]
pub struct Options {
    /// `MESH_THINK_MS`: the scripted brain's delay per turn.
    pub think_ms: u32,
    /// `MESH_LEASE_TTL`: worker lease TTL in seconds.
    pub lease_ttl: u32,
    /// `MESH_CAPACITY`: sessions per worker.
    pub capacity: u32,
    /// `MESH_PHASE_TIMEOUT`.
    pub phase_timeout: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            think_ms: 300,
            lease_ttl: 5,
            capacity: 4,
            phase_timeout: "60s",
        }
    }
}

/// Container tests in one process (`cargo test` without nextest) run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());
static NEXT_PROJECT: AtomicU32 = AtomicU32::new(0);

/// Where one project's services are, for any thread: cheap to clone. Published ports
/// are cached until a fault method changes a container (then every clone forgets them).
#[derive(Clone, Debug)]
pub struct Locator {
    pub project: String,
    ports: Arc<Mutex<BTreeMap<String, Option<serde_json::Value>>>>,
    generation: Arc<AtomicU32>,
    /// The operators' token of this project (`scripts/compose-secrets.sh`): the cluster
    /// runs with authentication on, as `make cluster-up` starts it.
    pub token: Arc<str>,
    /// The directory `scripts/compose-secrets.sh` filled for it: tokens, auth file,
    /// certificates, signing keys, the trust file; each container mounts its part.
    pub secrets: PathBuf,
    /// The CA of the coordinators' certificate (`secrets/ca.crt`).
    pub ca: PathBuf,
    /// etcd's CA and the client certificate etcd accepts (`secrets/pki/`).
    pub etcd_ca: PathBuf,
    pub etcd_client: CertFiles,
}

/// A gRPC client of a coordinator that sends the operators' token.
pub type MeshClient = SessionServiceClient<InterceptedService<Channel, BearerToken>>;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerToken(Arc<str>);

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Ok(value) = format!("Bearer {}", self.0).parse() {
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

impl Locator {
    pub fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    pub fn network(&self) -> String {
        format!("{}_mesh", self.project)
    }

    /// A project's locator; draws its tokens, auth file, certificates and signing keys
    /// (once) with the script `make cluster-up` uses.
    fn new(project: String) -> Locator {
        let secrets = crate::log_dir().join(format!("{project}-secrets"));
        let out = run(
            Command::new("bash")
                .current_dir(repo_root())
                .arg("scripts/compose-secrets.sh")
                .arg(&secrets),
            COMMAND_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "compose-secrets.sh: {}",
            text(&out.stderr)
        );
        let token = std::fs::read_to_string(secrets.join("operator.token"))
            .expect("operator token")
            .trim()
            .to_string();
        let pki = secrets.join("pki");
        Locator {
            project,
            ports: Arc::default(),
            generation: Arc::default(),
            token: Arc::from(token),
            ca: secrets.join("ca.crt"),
            etcd_ca: pki.join("etcd-ca.crt"),
            etcd_client: CertFiles {
                cert: pki.join("etcd-client.crt"),
                key: pki.join("etcd-client.key"),
            },
            secrets,
        }
    }

    /// `meshctl --coordinator URL ARGS` from the host, with the operators' token and the
    /// cluster's CA.
    pub fn meshctl(&self, url: &str, args: &[&str]) -> Output {
        self.meshctl_with(url, args, true, true)
    }

    /// `meshctl --coordinator URL ARGS` from the host, with or without the operators'
    /// token and the cluster's CA (nothing of the caller's environment gets in).
    pub fn meshctl_with(&self, url: &str, args: &[&str], token: bool, ca: bool) -> Output {
        let mut cmd = Command::new(crate::bin("meshctl"));
        cmd.arg("--coordinator").arg(url).args(args);
        for var in ["MESH_TOKEN", "MESH_TOKEN_FILE", "MESH_TLS_CA", "MESH_ETCD"] {
            cmd.env_remove(var);
        }
        if token {
            cmd.env("MESH_TOKEN_FILE", self.secrets.join("operator.token"));
        }
        if ca {
            cmd.env("MESH_TLS_CA", &self.ca);
        }
        cmd.stdin(Stdio::null()).output().expect("run meshctl")
    }

    /// A GET over TLS (checked against the cluster's CA) of the HTTP API or the
    /// dashboard, with the operators' token: (status, body).
    pub fn http_get(&self, addr: &str, path: &str) -> Option<(u16, String)> {
        let raw = format!(
            "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
            self.token
        );
        https_request(addr, Some(&self.ca), None, &raw)
            .ok()
            .map(|(code, _, body)| (code, body))
    }

    /// A GET of an etcd member's published client port over TLS, checked against etcd's
    /// CA, presenting etcd's client certificate when `with_cert`: (status, body), or why
    /// the connection failed.
    pub fn etcd_get(
        &self,
        member: &str,
        path: &str,
        with_cert: bool,
    ) -> Result<(u16, String), String> {
        let addr = self
            .published(member, ETCD_PORT)
            .ok_or_else(|| format!("{member}'s client port is not published"))?;
        let raw = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        let client = with_cert.then_some(&self.etcd_client);
        https_request(&addr, Some(&self.etcd_ca), client, &raw).map(|(code, _, body)| (code, body))
    }

    /// Forgets the published ports: a container was stopped, started or replaced.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.ports.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn ports(&self, service: &str) -> Option<serde_json::Value> {
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some(known) = self
            .ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
        {
            return known.clone();
        }
        let ports = run(
            Command::new("docker").args([
                "inspect",
                "-f",
                "{{json .NetworkSettings.Ports}}",
                &self.container(service),
            ]),
            COMMAND_TIMEOUT,
        )
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok())
        .filter(|v| v.as_object().is_some_and(|m| !m.is_empty()));
        let mut cache = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::SeqCst) == generation {
            cache.insert(service.to_string(), ports.clone());
        }
        ports
    }

    /// The loopback address a container port is published on, while the container runs.
    pub fn published(&self, service: &str, port: u16) -> Option<String> {
        let ports = self.ports(service)?;
        let binding = ports.get(format!("{port}/tcp"))?.as_array()?.first()?;
        let ip = binding.get("HostIp")?.as_str()?;
        let host_port = binding.get("HostPort")?.as_str()?;
        assert_eq!(ip, "127.0.0.1", "{service} is published on loopback only");
        Some(format!("127.0.0.1:{host_port}"))
    }

    pub fn http(&self, coordinator: &str) -> Option<String> {
        self.published(coordinator, HTTP_PORT)
    }

    /// A coordinator's published gRPC port as an `https://` URL (it serves TLS only).
    pub fn grpc_url(&self, coordinator: &str) -> Option<String> {
        self.published(coordinator, GRPC_PORT)
            .map(|a| format!("https://{a}"))
    }

    /// `/readyz` of a coordinator over TLS: (status, trimmed body), None when it does not
    /// answer.
    pub fn readyz(&self, coordinator: &str) -> Option<(u16, String)> {
        let addr = self.http(coordinator)?;
        let raw = format!("GET /readyz HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        https_request(&addr, Some(&self.ca), None, &raw)
            .ok()
            .map(|(code, _, body)| (code, body.trim().to_string()))
    }

    /// The coordinators whose `/readyz` says they lead, right now.
    pub fn leaders(&self) -> Vec<&'static str> {
        COORDINATORS
            .into_iter()
            .filter(|c| matches!(self.readyz(c), Some((200, body)) if body == "leader"))
            .collect()
    }

    /// The leading coordinator's gRPC URL, if exactly one leads.
    pub fn leader_url(&self) -> Option<String> {
        match self.leaders().as_slice() {
            [one] => self.grpc_url(one),
            _ => None,
        }
    }

    /// The etcd member that leads raft (its `etcd_server_is_leader` is 1).
    pub fn etcd_leader(&self) -> Option<&'static str> {
        ETCD_MEMBERS.into_iter().find(|m| {
            self.etcd_get(m, "/metrics", true)
                .is_ok_and(|(code, body)| {
                    code == 200 && body.lines().any(|l| l.trim() == "etcd_server_is_leader 1")
                })
        })
    }
}

/// One compose project of the agentmesh images.
pub struct Mesh {
    pub at: Locator,
    opts: Options,
    override_file: PathBuf,
    started: Instant,
    pub rt: tokio::runtime::Runtime,
    _serial: MutexGuard<'static, ()>,
}

impl Mesh {
    /// Starts the cluster and waits until it is ready. `None` (after printing why, once)
    /// when no Docker engine answers: the test then has nothing to check and returns.
    /// Panics when the images are missing ("run `make images`").
    pub fn up(test: &str, opts: Options) -> Option<Mesh> {
        if let Err(why) = docker_answers() {
            println!("{test}: skipped, no Docker engine answers ({why})");
            return None;
        }
        require_images();
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        reap_stale_projects();
        let project = format!(
            "agentmesh-t{}-{}",
            std::process::id(),
            NEXT_PROJECT.fetch_add(1, Ordering::SeqCst)
        );
        let override_file = crate::log_dir().join(format!("{project}.override.yml"));
        // etcd's client ports are published for the tests only (to find the raft leader,
        // and to see that etcd refuses a client without its certificate).
        let mut yaml = String::from("version: \"2.4\"\nservices:\n");
        for m in ETCD_MEMBERS {
            yaml.push_str(&format!(
                "  {m}:\n    ports: [\"127.0.0.1::{ETCD_PORT}\"]\n"
            ));
        }
        std::fs::write(&override_file, yaml).expect("write the compose override");
        let mesh = Mesh {
            at: Locator::new(project),
            opts,
            override_file,
            started: Instant::now(),
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
            _serial: serial,
        };
        mesh.progress(&format!(
            "starting project {} ({} containers, {:?})",
            mesh.at.project,
            ETCD_MEMBERS.len() + COORDINATORS.len() + WORKERS.len(),
            mesh.opts
        ));
        mesh.compose_ok(&["up", "-d", "--no-color", "--quiet-pull"]);
        mesh.progress("containers started; waiting for a leader and every worker");
        let leader = mesh.leader(Duration::from_secs(60));
        mesh.wait_workers(WORKERS.len(), Duration::from_secs(60));
        mesh.progress(&format!(
            "ready: {leader} leads, {} workers connected and leased",
            WORKERS.len()
        ));
        Some(mesh)
    }

    /// A progress line, with the time since the project started.
    pub fn progress(&self, what: &str) {
        println!(
            "[{} +{:.1}s] {what}",
            self.at.project,
            self.started.elapsed().as_secs_f64()
        );
    }

    fn compose_command(&self) -> Command {
        let root = repo_root();
        let mut cmd = Command::new("docker-compose");
        cmd.current_dir(&root)
            .arg("-f")
            .arg(root.join(COMPOSE_FILE))
            .arg("-f")
            .arg(&self.override_file)
            .arg("-p")
            .arg(&self.at.project)
            .env("MESH_BIND", "127.0.0.1")
            .env("MESH_IMAGE_TAG", VERSION)
            .env("MESH_ETCD_TAG", "latest")
            .env("MESH_THINK_MS", self.opts.think_ms.to_string())
            .env("MESH_LEASE_TTL", self.opts.lease_ttl.to_string())
            .env("MESH_CAPACITY", self.opts.capacity.to_string())
            .env("MESH_PHASE_TIMEOUT", self.opts.phase_timeout)
            .env("MESH_RESTART", "no")
            .env("MESH_SECRETS", &self.at.secrets)
            .env("RUST_LOG", "info");
        // Empty host ports: every coordinator port is published on an ephemeral one.
        for var in [
            "MESH_GRPC_PORT",
            "MESH_HTTP_PORT",
            "MESH_GRPC_PORT_2",
            "MESH_HTTP_PORT_2",
            "MESH_GRPC_PORT_3",
            "MESH_HTTP_PORT_3",
        ] {
            cmd.env(var, "");
        }
        cmd
    }

    /// Runs `docker-compose <args>` on this project.
    pub fn compose(&self, args: &[&str]) -> Result<Output, String> {
        run(self.compose_command().args(args), COMMAND_TIMEOUT)
    }

    fn compose_ok(&self, args: &[&str]) {
        let out = self.compose(args).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "docker-compose {args:?} failed: {}",
            text(&out.stderr)
        );
    }

    fn docker_ok(&self, args: &[&str]) {
        let out = run(Command::new("docker").args(args), COMMAND_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}",
            text(&out.stderr)
        );
    }

    // ---- faults ----

    /// `docker kill` (SIGKILL) of a service's container.
    pub fn kill(&self, service: &str) {
        self.progress(&format!("docker kill {service}"));
        self.docker_ok(&["kill", &self.at.container(service)]);
        self.at.invalidate();
    }

    /// `docker stop` (SIGTERM, then SIGKILL after `grace`).
    pub fn stop(&self, service: &str, grace: Duration) {
        self.progress(&format!("docker stop {service}"));
        self.docker_ok(&[
            "stop",
            "-t",
            &grace.as_secs().to_string(),
            &self.at.container(service),
        ]);
        self.at.invalidate();
    }

    /// `docker start` of a stopped container (same data, same network, new host ports).
    pub fn start(&self, service: &str) {
        self.progress(&format!("docker start {service}"));
        self.docker_ok(&["start", &self.at.container(service)]);
        self.at.invalidate();
    }

    /// Cuts a container off the project's network: its connections go nowhere.
    pub fn disconnect(&self, service: &str) {
        self.progress(&format!("docker network disconnect {service}"));
        self.docker_ok(&[
            "network",
            "disconnect",
            &self.at.network(),
            &self.at.container(service),
        ]);
    }

    /// Puts a cut-off container back on the network, under its service name.
    pub fn connect(&self, service: &str) {
        self.progress(&format!("docker network connect {service}"));
        self.docker_ok(&[
            "network",
            "connect",
            "--alias",
            service,
            &self.at.network(),
            &self.at.container(service),
        ]);
    }

    /// Replaces a service's container with a new one (SIGTERM to the old, up to `grace`),
    /// as a Deployment rollout replaces a pod.
    pub fn recreate(&self, service: &str, grace: Duration) {
        self.progress(&format!("replacing {service}"));
        self.compose_ok(&[
            "up",
            "-d",
            "--no-color",
            "--no-deps",
            "--force-recreate",
            "-t",
            &grace.as_secs().to_string(),
            service,
        ]);
        self.at.invalidate();
    }

    // ---- state ----

    /// Waits until exactly one coordinator says it leads; returns its service name.
    pub fn leader(&self, timeout: Duration) -> &'static str {
        let start = Instant::now();
        loop {
            let leaders = self.at.leaders();
            assert!(
                leaders.len() <= 1,
                "two coordinators claim to lead: {leaders:?}"
            );
            if let [one] = leaders.as_slice() {
                return one;
            }
            assert!(
                start.elapsed() < timeout,
                "no coordinator leads after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a coordinator answers `/readyz` with 200 (leading, or standing by
    /// with etcd reachable).
    pub fn wait_ready(&self, coordinator: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some((200, body)) = self.at.readyz(coordinator) {
                return body;
            }
            assert!(
                start.elapsed() < timeout,
                "{coordinator} not ready after {timeout:?}: /readyz {:?}",
                self.at.readyz(coordinator)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A gRPC client of the leading coordinator, or None when none leads or answers.
    pub fn try_client(&self) -> Option<MeshClient> {
        let url = self.at.leader_url()?;
        self.rt.block_on(connect(&url, &self.at))
    }

    /// A gRPC client of the leader, waiting up to `timeout` for one.
    pub fn client(&self, timeout: Duration) -> MeshClient {
        let start = Instant::now();
        loop {
            if let Some(c) = self.try_client() {
                return c;
            }
            assert!(
                start.elapsed() < timeout,
                "no leader to talk to after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The workers the leader lists (any state).
    pub fn workers(&self) -> Vec<v1::WorkerInfo> {
        let Some(mut client) = self.try_client() else {
            return Vec::new();
        };
        self.rt
            .block_on(async move {
                tokio::time::timeout(
                    Duration::from_secs(5),
                    client.list_workers(v1::ListWorkersRequest {}),
                )
                .await
            })
            .ok()
            .and_then(Result::ok)
            .map(|r| r.into_inner().workers)
            .unwrap_or_default()
    }

    /// The ids of the workers that hold a stream and a lease.
    pub fn ready_workers(&self) -> BTreeSet<String> {
        self.workers()
            .into_iter()
            .filter(|w| w.connected && w.leased)
            .map(|w| w.worker_id)
            .collect()
    }

    /// Waits until exactly `n` workers hold a stream and a lease at the leader.
    pub fn wait_workers(&self, n: usize, timeout: Duration) {
        let start = Instant::now();
        loop {
            let ready = self.ready_workers();
            if ready.len() == n {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "{} of {n} workers ready after {timeout:?}: {ready:?}",
                ready.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates a session at the leader; returns its id.
    pub fn create(&self, task: &str, roles: &[&str]) -> String {
        let mut client = self.client(Duration::from_secs(30));
        let request = v1::CreateSessionRequest {
            task: task.to_string(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        };
        let id = self
            .rt
            .block_on(async move { client.create_session(request).await })
            .expect("create session")
            .into_inner()
            .id;
        self.progress(&format!("created session {id}"));
        id
    }

    /// The session as the leader sees it now, or None when no leader answers.
    pub fn session(&self, id: &str) -> Option<v1::Session> {
        let mut client = self.try_client()?;
        let request = v1::GetSessionRequest {
            session_id: id.to_string(),
        };
        self.rt
            .block_on(async move {
                tokio::time::timeout(Duration::from_secs(5), client.get_session(request)).await
            })
            .ok()?
            .ok()
            .map(|r| r.into_inner())
    }

    /// Polls until `pred` holds for the session (through whichever coordinator leads).
    pub fn wait_session(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&v1::Session) -> bool,
    ) -> v1::Session {
        let start = Instant::now();
        let mut last = None;
        loop {
            if let Some(s) = self.session(id) {
                if pred(&s) {
                    return s;
                }
                last = Some(s);
            }
            assert!(
                start.elapsed() < timeout,
                "session {id} not {what} after {timeout:?}; last seen: {}",
                last.as_ref().map_or("nothing".to_string(), |s| format!(
                    "{} round {} entries {} reason {:?}",
                    agentmesh_proto::status_name(s.status),
                    s.round,
                    s.entry_count,
                    s.reason
                ))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the session to end; returns it.
    pub fn wait_end(&self, id: &str, timeout: Duration) -> v1::Session {
        let s = self.wait_session(id, timeout, "ended", |s| is_terminal(s.status));
        self.progress(&format!(
            "session {id} ended {} in round {}",
            agentmesh_proto::status_name(s.status),
            s.round
        ));
        s
    }

    /// The whole transcript, from the leader (retried while leadership moves).
    pub fn transcript(&self, id: &str) -> v1::Transcript {
        let start = Instant::now();
        loop {
            if let Some(mut client) = self.try_client() {
                let request = v1::GetTranscriptRequest {
                    session_id: id.to_string(),
                };
                if let Ok(Ok(t)) = self.rt.block_on(async move {
                    tokio::time::timeout(Duration::from_secs(10), client.get_transcript(request))
                        .await
                }) {
                    return t.into_inner();
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no transcript of {id} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Follows a session's durable events from seq 1 until it ends (or the Watch drops).
    pub fn watch(&self, id: &str) -> Watch {
        Watch::start(self.at.clone(), id.to_string())
    }

    /// The story of each coordinator's terms, from its whole log: elections, resumed
    /// sessions, step-downs and errors. Printed before the log tails, so a failure report
    /// that keeps only its first part still says who led and what each leader took over.
    pub fn term_story(&self) -> String {
        const TOLD: [&str; 7] = [
            "elected leader",
            "resumed",
            "cannot resume",
            "cannot load",
            "stepping down",
            "leadership lost",
            " ERROR ",
        ];
        let mut out = String::new();
        for service in COORDINATORS {
            let log = self.container_log(service, None);
            let story: Vec<&str> = log
                .lines()
                .filter(|line| TOLD.iter().any(|t| line.contains(t)))
                .collect();
            out.push_str(&format!(
                "--- {service}: terms ---\n{}",
                tail(&story.join("\n"), 30)
            ));
        }
        out
    }

    /// The last lines of every container's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for service in COORDINATORS
            .iter()
            .chain(ETCD_MEMBERS.iter())
            .chain(WORKERS.iter())
        {
            let lines = if service.starts_with("coordinator") {
                40
            } else {
                12
            };
            let log = self.container_log(service, Some(lines));
            out.push_str(&format!("--- {service} ---\n{}", tail(&log, lines)));
        }
        out
    }

    /// A container's log (stdout then stderr), its last `lines` only when given; what
    /// went wrong reading it otherwise.
    fn container_log(&self, service: &str, lines: Option<usize>) -> String {
        let container = self.at.container(service);
        let lines = lines.map(|n| n.to_string());
        let mut args = vec!["logs"];
        if let Some(n) = &lines {
            args.extend(["--tail", n.as_str()]);
        }
        args.push(&container);
        run(Command::new("docker").args(&args), Duration::from_secs(20))
            .map(|o| format!("{}{}", text(&o.stdout), text(&o.stderr)))
            .unwrap_or_else(|e| e)
    }

    fn down(&self) -> Result<Output, String> {
        self.compose(&["down", "-v", "--remove-orphans", "--timeout", "1"])
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.term_story());
            eprintln!("{}", self.logs());
        }
        match self.down() {
            Ok(out) if out.status.success() => self.progress("project removed"),
            Ok(out) => eprintln!(
                "docker-compose down of {} failed: {}",
                self.at.project,
                text(&out.stderr)
            ),
            Err(e) => eprintln!("docker-compose down of {}: {e}", self.at.project),
        }
        let _ = std::fs::remove_file(&self.override_file);
    }
}

/// Removes the projects of container-test processes that died without cleaning up
/// (a test killed by a timeout runs no destructor). Only `agentmesh-t<pid>-<n>` projects
/// whose pid no longer runs are touched.
fn reap_stale_projects() {
    let mut stale = BTreeSet::new();
    for kind in [
        vec!["ps", "-a"],
        vec!["network", "ls"],
        vec!["volume", "ls"],
    ] {
        let mut args = kind.clone();
        args.extend([
            "--filter",
            "label=com.docker.compose.project",
            "--format",
            "{{.Label \"com.docker.compose.project\"}}",
        ]);
        let Ok(out) = run(Command::new("docker").args(&args), COMMAND_TIMEOUT) else {
            continue;
        };
        for project in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(rest) = project.strip_prefix("agentmesh-t") else {
                continue;
            };
            let Some((pid, n)) = rest.split_once('-') else {
                continue;
            };
            if pid.parse::<u32>().is_err() || n.parse::<u32>().is_err() {
                continue;
            }
            if pid != std::process::id().to_string() && !Path::new(&format!("/proc/{pid}")).exists()
            {
                stale.insert(project.to_string());
            }
        }
    }
    let root = repo_root();
    for project in stale {
        println!("removing the left-over project {project} of a test process that is gone");
        let _ = run(
            Command::new("docker-compose")
                .current_dir(&root)
                .arg("-f")
                .arg(root.join(COMPOSE_FILE))
                .args([
                    "-p",
                    &project,
                    "down",
                    "-v",
                    "--remove-orphans",
                    "--timeout",
                    "1",
                ]),
            COMMAND_TIMEOUT,
        );
    }
}

/// A gRPC client of `url` (`https://`, checked against the cluster's CA) sending the
/// operators' token.
async fn connect(url: &str, at: &Locator) -> Option<MeshClient> {
    let endpoint = ClientCredentials::tls_only(Some(at.ca.clone()), None, None)
        .endpoint(url)
        .ok()?
        .connect_timeout(Duration::from_secs(3));
    let channel = tokio::time::timeout(Duration::from_secs(5), endpoint.connect())
        .await
        .ok()?
        .ok()?;
    Some(SessionServiceClient::with_interceptor(
        channel,
        BearerToken(at.token.clone()),
    ))
}

/// A durable session event, and when the test saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub event: v1::SessionEvent,
}

/// A session's durable events (entries and status changes), followed from seq 1 through
/// whichever coordinator leads, resuming from the last seq after each leader change.
pub struct Watch {
    seen: Arc<Mutex<Vec<Seen>>>,
    streams: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(at: Locator, id: String) -> Watch {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let streams = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, streams, stop) = (seen.clone(), streams.clone(), stop.clone());
            std::thread::spawn(move || follow(at, id, seen, streams, stop))
        };
        Watch {
            seen,
            streams,
            stop,
            thread: Some(thread),
        }
    }

    /// Every durable event seen so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many watch streams were opened so far (one per leader it followed, plus one
    /// per broken stream).
    pub fn streams(&self) -> u32 {
        self.streams.load(Ordering::SeqCst)
    }

    /// The transcript entries seen so far, in order.
    pub fn entries(&self) -> Vec<v1::Entry> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s.event.event {
                Some(session_event::Event::Entry(e)) => Some(e),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn follow(
    at: Locator,
    id: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    streams: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut next = 1u64;
    while !stop.load(Ordering::SeqCst) {
        let Some(url) = at.leader_url() else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let ended = rt.block_on(async {
            let Some(mut client) = connect(&url, &at).await else {
                return false;
            };
            let request = v1::WatchSessionRequest {
                session_id: id.clone(),
                from_seq: next,
                batch_window_ms: Some(0),
            };
            let Ok(Ok(response)) =
                tokio::time::timeout(Duration::from_secs(5), client.watch_session(request)).await
            else {
                return false;
            };
            streams.fetch_add(1, Ordering::SeqCst);
            let mut stream = response.into_inner();
            loop {
                if stop.load(Ordering::SeqCst) {
                    return true;
                }
                match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                    // Quiet: fine while this coordinator still leads.
                    Err(_) => {
                        let at = at.clone();
                        let still = tokio::task::spawn_blocking(move || at.leader_url())
                            .await
                            .ok()
                            .flatten();
                        if still.as_deref() != Some(url.as_str()) {
                            return false;
                        }
                    }
                    Ok(Ok(Some(event))) => {
                        if event.ephemeral || event.seq < next {
                            continue;
                        }
                        next = event.seq + 1;
                        let terminal = matches!(
                            &event.event,
                            Some(session_event::Event::Status(s)) if is_terminal(s.status)
                        );
                        seen.lock().unwrap_or_else(|e| e.into_inner()).push(Seen {
                            at: Instant::now(),
                            event,
                        });
                        if terminal {
                            return true;
                        }
                    }
                    Ok(Ok(None)) | Ok(Err(_)) => return false,
                }
            }
        });
        if ended {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// No two entries answer the same turn (round, phase, role): a fault must not make a
/// turn count twice.
pub fn assert_no_duplicate_turns(t: &v1::Transcript) {
    let mut seen = BTreeSet::new();
    for e in &t.entries {
        assert!(
            seen.insert((e.round, e.phase, e.role.clone())),
            "turn round {} phase {} role {} answered twice",
            e.round,
            e.phase,
            e.role
        );
    }
}

/// Every entry a watcher saw is in the final transcript, at the same seq, unchanged:
/// nothing acknowledged was lost, nothing forked.
pub fn assert_watched_entries_kept(watched: &[v1::Entry], t: &v1::Transcript) {
    let by_seq: BTreeMap<u64, &v1::Entry> = t.entries.iter().map(|e| (e.seq, e)).collect();
    for e in watched {
        let kept = by_seq
            .get(&e.seq)
            .unwrap_or_else(|| panic!("entry {} was streamed but is not in the transcript", e.seq));
        assert!(
            kept.role == e.role
                && kept.round == e.round
                && kept.phase == e.phase
                && kept.content == e.content
                && kept.worker_id == e.worker_id,
            "entry {} changed after it was streamed: {:?} became {:?}",
            e.seq,
            e,
            kept
        );
    }
}
