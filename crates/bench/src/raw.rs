//! The raw limit: plain tonic bidirectional broadcast-and-collect.
//!
//! Same process topology as the mesh's broadcast round: one server process (the bench
//! itself, a multi-threaded tokio runtime like the coordinator's) and N client processes
//! (`mesh-bench __raw-client`, one stream each, a current-thread runtime like the bench
//! workers'). Same shape of server too: every stream's responses are a `ReceiverStream` fed
//! by a channel, and every stream's inbound messages are read by a task of their own and
//! forwarded to one collector. Each round the server sends a 200-byte message to every
//! stream and waits for all N 200-byte replies; one round in flight.

use crate::procs::{Proc, stop_all};
use anyhow::{Context, bail};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub mod pb {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("agentmesh.bench.v1");
}

use pb::Blob;
use pb::raw_client::RawClient;
use pb::raw_server::{Raw, RawServer};

/// Bytes of every message, both ways.
pub const PAYLOAD_BYTES: usize = 200;

type StreamTx = mpsc::Sender<Result<Blob, Status>>;

struct RawService {
    joined: mpsc::Sender<StreamTx>,
    replies: mpsc::Sender<u64>,
}

#[tonic::async_trait]
impl Raw for RawService {
    type ExchangeStream = ReceiverStream<Result<Blob, Status>>;

    async fn exchange(
        &self,
        request: Request<Streaming<Blob>>,
    ) -> Result<Response<Self::ExchangeStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(256);
        self.joined
            .send(tx)
            .await
            .map_err(|_| Status::unavailable("the bench is over"))?;
        let replies = self.replies.clone();
        tokio::spawn(async move {
            while let Ok(Some(blob)) = inbound.message().await {
                if replies.send(blob.round).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Round latencies of one raw run, in order.
pub struct RawRun {
    pub latencies: Vec<Duration>,
    pub wall: Duration,
    /// CPU time of this process (the server) and of the clients during the rounds.
    pub cpu_bench: Option<Duration>,
    pub cpu_clients: Option<Duration>,
}

/// Runs `rounds` broadcast rounds over `n` client processes of `bench_bin`.
pub async fn run(
    bench_bin: &Path,
    log_dir: &Path,
    n: usize,
    rounds: u32,
    time_limit: Duration,
) -> anyhow::Result<RawRun> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (joined_tx, mut joined_rx) = mpsc::channel(n.max(1));
    let (replies_tx, mut replies_rx) = mpsc::channel(4 * n.max(1));
    let service = RawService {
        joined: joined_tx,
        replies: replies_tx,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // TCP_NODELAY on accepted sockets, as the coordinator sets it (the builder's own
    // `tcp_nodelay` does not apply to a listener bound outside tonic).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RawServer::new(service))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            }),
    );

    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        clients.push(Proc::spawn(
            &format!("raw-client-{i}"),
            bench_bin,
            &[
                "__raw-client".to_string(),
                "--addr".to_string(),
                format!("http://{addr}"),
            ],
            log_dir,
            &[],
            false,
        )?);
    }
    let pids: Vec<u32> = clients.iter().map(Proc::pid).collect();
    let result = drive(
        &mut joined_rx,
        &mut replies_rx,
        n,
        rounds,
        time_limit,
        &pids,
    )
    .await;
    let _ = tokio::task::spawn_blocking(move || {
        stop_all(&mut clients, Duration::from_secs(3));
    })
    .await;
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
    result
}

async fn drive(
    joined: &mut mpsc::Receiver<StreamTx>,
    replies: &mut mpsc::Receiver<u64>,
    n: usize,
    rounds: u32,
    time_limit: Duration,
    client_pids: &[u32],
) -> anyhow::Result<RawRun> {
    let mut streams = Vec::with_capacity(n);
    let join_deadline = Instant::now() + Duration::from_secs(30);
    while streams.len() < n {
        let left = join_deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, joined.recv()).await {
            Ok(Some(tx)) => streams.push(tx),
            _ => bail!("only {} of {n} raw clients connected", streams.len()),
        }
    }
    let payload = vec![b'x'; PAYLOAD_BYTES];
    let mut latencies = Vec::with_capacity(rounds as usize);
    let cpu = || {
        let server = crate::procs::cpu_time(std::process::id());
        let clients: Option<Duration> =
            client_pids.iter().map(|p| crate::procs::cpu_time(*p)).sum();
        (server, clients)
    };
    let cpu_before = cpu();
    let started = Instant::now();
    for round in 0..u64::from(rounds) {
        if started.elapsed() > time_limit {
            bail!("raw run exceeded {time_limit:?} after {round} rounds");
        }
        let t0 = Instant::now();
        for tx in &streams {
            tx.send(Ok(Blob {
                round,
                payload: payload.clone(),
            }))
            .await
            .context("a raw client went away")?;
        }
        let mut got = 0;
        while got < n {
            match tokio::time::timeout(Duration::from_secs(10), replies.recv()).await {
                Ok(Some(r)) if r == round => got += 1,
                Ok(Some(_)) => {}
                _ => bail!("round {round}: only {got} of {n} replies within 10s"),
            }
        }
        latencies.push(t0.elapsed());
    }
    let wall = started.elapsed();
    let cpu_after = cpu();
    let since = |a: Option<Duration>, b: Option<Duration>| Some(a?.saturating_sub(b?));
    Ok(RawRun {
        latencies,
        wall,
        cpu_bench: since(cpu_after.0, cpu_before.0),
        cpu_clients: since(cpu_after.1, cpu_before.1),
    })
}

/// `mesh-bench __raw-client`: answers every message with a 200-byte message of the same
/// round, until the server goes away.
pub async fn client(addr: String) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(addr)?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut client = RawClient::new(channel);
    let (tx, rx) = mpsc::channel(256);
    let mut inbound = client.exchange(ReceiverStream::new(rx)).await?.into_inner();
    let payload = vec![b'y'; PAYLOAD_BYTES];
    while let Ok(Some(blob)) = inbound.message().await {
        if tx
            .send(Blob {
                round: blob.round,
                payload: payload.clone(),
            })
            .await
            .is_err()
        {
            break;
        }
    }
    Ok(())
}
