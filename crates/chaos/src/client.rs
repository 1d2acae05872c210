//! The client side of the mesh's API, across coordinators that come and go: every call
//! goes to the coordinator that answered last, then to the others (a standby forwards to
//! the leader), each attempt bounded in time.

use agentmesh_proto::v1::session_service_client::SessionServiceClient;
use agentmesh_proto::v1::{self};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long one call to one coordinator may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Clients {
    /// The gRPC URLs of the live coordinators, kept up to date by the fault injector.
    urls: Arc<Mutex<Vec<String>>>,
    channels: HashMap<String, Channel>,
    preferred: Option<String>,
    /// Where the next call starts when no coordinator answered last: moves on with every
    /// failure, so a dead coordinator early in the list is not asked first forever.
    cursor: usize,
}

impl Clients {
    pub fn new(urls: Arc<Mutex<Vec<String>>>) -> Clients {
        Clients {
            urls,
            channels: HashMap::new(),
            preferred: None,
            cursor: 0,
        }
    }

    fn candidates(&mut self) -> Vec<String> {
        let urls = self.urls.lock().expect("urls lock").clone();
        self.channels.retain(|url, _| urls.contains(url));
        let mut order = urls;
        if !order.is_empty() {
            let n = self.cursor % order.len();
            order.rotate_left(n);
        }
        if let Some(p) = &self.preferred
            && let Some(i) = order.iter().position(|u| u == p)
        {
            order.swap(0, i);
        }
        order
    }

    fn channel(&mut self, url: &str) -> Result<Channel, String> {
        if let Some(c) = self.channels.get(url) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .connect_lazy();
        self.channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }

    /// Calls `f` on up to `tries` coordinators until one answers OK.
    async fn call<T, F, Fut>(&mut self, tries: usize, mut f: F) -> Result<T, String>
    where
        F: FnMut(SessionServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last = "no coordinator is running".to_string();
        for url in self.candidates().into_iter().take(tries.max(1)) {
            let client = SessionServiceClient::new(self.channel(&url)?)
                .max_decoding_message_size(64 * 1024 * 1024);
            match tokio::time::timeout(CALL_TIMEOUT, f(client)).await {
                Ok(Ok(response)) => {
                    self.preferred = Some(url);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => {
                    last = format!("{url}: {:?}: {}", status.code(), status.message());
                    // NOT_FOUND and the like are answers, not an unreachable coordinator.
                    if !matches!(
                        status.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::Unknown
                            | tonic::Code::Internal
                            | tonic::Code::Cancelled
                            | tonic::Code::DeadlineExceeded
                    ) {
                        return Err(last);
                    }
                }
                Err(_) => last = format!("{url}: no answer within {CALL_TIMEOUT:?}"),
            }
            self.preferred = None;
            self.cursor = self.cursor.wrapping_add(1);
        }
        Err(last)
    }

    pub async fn list_sessions(&mut self) -> Result<Vec<v1::Session>, String> {
        self.call(3, |mut c| async move {
            c.list_sessions(v1::ListSessionsRequest {}).await
        })
        .await
        .map(|r| r.sessions)
    }

    pub async fn list_workers(&mut self) -> Result<Vec<v1::WorkerInfo>, String> {
        self.call(3, |mut c| async move {
            c.list_workers(v1::ListWorkersRequest {}).await
        })
        .await
        .map(|r| r.workers)
    }

    /// One attempt only: a create whose answer was lost may still have happened, and a
    /// second attempt elsewhere would start a second session.
    pub async fn create_session(
        &mut self,
        request: v1::CreateSessionRequest,
    ) -> Result<v1::Session, String> {
        self.call(1, |mut c| {
            let request = request.clone();
            async move { c.create_session(request).await }
        })
        .await
    }

    pub async fn transcript(&mut self, id: &str) -> Result<v1::Transcript, String> {
        self.call(3, |mut c| {
            let session_id = id.to_string();
            async move {
                c.get_transcript(v1::GetTranscriptRequest { session_id })
                    .await
            }
        })
        .await
    }
}
