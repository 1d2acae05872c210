//! `WatchSession` over gRPC with events encoded once per session, not once per watcher.
//!
//! The generated `SessionServiceServer` encodes every response message itself, so each
//! of 50 watchers would clone and encode each event again. [`SessionRoutes`] wraps that
//! server and answers the one path `/agentmesh.v1.SessionService/WatchSession` with
//! [`PreEncodedCodec`], which writes the [`SharedEvent::encoded`] bytes the event log
//! made when the event was logged; every other method goes to the generated server
//! unchanged. Same wire format, same statuses (leadership, NOT_FOUND, OUT_OF_RANGE
//! come from the same `MeshError` table), so clients cannot tell the difference.

use crate::Mesh;
use crate::events::SharedEvent;
use crate::watch;
use agentmesh_proto::v1;
use bytes::{BufMut, Bytes};
use futures::future::BoxFuture;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};

/// The method this module serves.
pub const WATCH_SESSION_PATH: &str = "/agentmesh.v1.SessionService/WatchSession";

/// Wraps the generated `SessionService` server `inner`; see the module docs.
#[derive(Clone)]
pub struct SessionRoutes<S> {
    inner: S,
    mesh: Arc<Mesh>,
}

impl<S> SessionRoutes<S> {
    pub fn new(inner: S, mesh: Arc<Mesh>) -> Self {
        SessionRoutes { inner, mesh }
    }
}

impl<S: NamedService> NamedService for SessionRoutes<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for SessionRoutes<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != WATCH_SESSION_PATH {
            return Box::pin(self.inner.call(request));
        }
        let max_decoding = self.mesh.config.max_message_bytes;
        let method = WatchSessionMethod(self.mesh.clone());
        Box::pin(async move {
            let mut grpc = Grpc::new(PreEncodedCodec)
                .apply_max_message_size_config(Some(max_decoding), Some(crate::MAX_ENCODE_BYTES));
            Ok(grpc.server_streaming(method, request).await)
        })
    }
}

struct WatchSessionMethod(Arc<Mesh>);

/// A watcher's channel as a stream of encoded events.
type EncodedEvents = futures::stream::Map<
    ReceiverStream<Arc<SharedEvent>>,
    fn(Arc<SharedEvent>) -> Result<Bytes, Status>,
>;

fn encoded(event: Arc<SharedEvent>) -> Result<Bytes, Status> {
    Ok(event.encoded.clone())
}

impl ServerStreamingService<v1::WatchSessionRequest> for WatchSessionMethod {
    type Response = Bytes;
    type ResponseStream = EncodedEvents;
    type Future = BoxFuture<'static, Result<Response<EncodedEvents>, Status>>;

    fn call(&mut self, request: Request<v1::WatchSessionRequest>) -> Self::Future {
        let mesh = self.0.clone();
        Box::pin(async move {
            let events = session_events(&mesh, request.into_inner()).await?;
            use futures::StreamExt;
            Ok(Response::new(ReceiverStream::new(events).map(
                encoded as fn(Arc<SharedEvent>) -> Result<Bytes, Status>,
            )))
        })
    }
}

/// Starts following a session for a `WatchSession` request: the leader check, the
/// request's batch window (unset: the coordinator's default), then [`watch::session_events`].
pub async fn session_events(
    mesh: &Arc<Mesh>,
    request: v1::WatchSessionRequest,
) -> Result<tokio::sync::mpsc::Receiver<Arc<SharedEvent>>, Status> {
    mesh.require_leader().await?;
    let window = request
        .batch_window_ms
        .map_or(mesh.config.watch_batch_window, |ms| {
            Duration::from_millis(u64::from(ms))
        });
    let events = watch::session_events(mesh, &request.session_id, request.from_seq, window)
        .await
        .map_err(Status::from)?;
    Ok(events)
}

/// Encodes already-encoded messages (by copying them) and decodes `WatchSessionRequest`.
struct PreEncodedCodec;

impl Codec for PreEncodedCodec {
    type Encode = Bytes;
    type Decode = v1::WatchSessionRequest;
    type Encoder = PreEncodedCodec;
    type Decoder = tonic_prost::ProstDecoder<v1::WatchSessionRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncodedCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

impl Encoder for PreEncodedCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}
