//! `WatchSession` over gRPC, sent from bytes framed once per event, not once per watcher.
//!
//! The generated `SessionServiceServer` encodes every response message itself, and sends
//! it through a channel per message, so each of 50 watchers would clone, encode, and
//! queue each event again — a profile of 50 watchers showed that per-event work as the
//! largest part of their cost. [`SessionRoutes`] wraps that server and answers the one
//! path `/agentmesh.v1.SessionService/WatchSession` itself: the event log already holds
//! every event as a gRPC message on the wire ([`SharedEvent::grpc_frame`]), so a watcher's
//! response body is those shared bytes, everything a watcher has pending joined into one
//! chunk, then the `grpc-status` trailer. Every other method goes to the generated server
//! unchanged. Same wire format, same statuses (NOT_FOUND, OUT_OF_RANGE come from the
//! same `MeshError` table), so clients cannot tell the difference; `tests/e2e` watch
//! through tonic clients.

use crate::edge::grpc::status_of;
use crate::errors::MeshError;
use crate::events::{GRPC_PREFIX_LEN, SharedEvent};
use crate::state::Mesh;
use crate::watch;
use agentmesh_proto::v1;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;

/// The method this module serves.
pub(crate) const WATCH_SESSION_PATH: &str = "/agentmesh.v1.SessionService/WatchSession";

/// Wraps the generated `SessionService` server `inner`; see the module docs.
#[derive(Clone)]
pub(crate) struct SessionRoutes<S> {
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
        let mesh = self.mesh.clone();
        Box::pin(async move {
            Ok(watch_session(mesh, request)
                .await
                .unwrap_or_else(Status::into_http))
        })
    }
}

/// Answers one `WatchSession` call: a trailers-only error, or a stream of events.
async fn watch_session(
    mesh: Arc<Mesh>,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, Status> {
    let limit = mesh.config.max_message_bytes;
    let body = http_body_util::Limited::new(request.into_body(), limit + GRPC_PREFIX_LEN)
        .collect()
        .await
        .map_err(|e| match e.downcast::<http_body_util::LengthLimitError>() {
            Ok(_) => Status::resource_exhausted(format!(
                "the request exceeds the {limit}-byte message limit"
            )),
            Err(e) => Status::internal(format!("reading the request: {e}")),
        })?
        .to_bytes();
    let request = v1::WatchSessionRequest::decode(the_one_message(body)?)
        .map_err(|e| Status::invalid_argument(format!("WatchSessionRequest: {e}")))?;
    let events = session_events(&mesh, request).await.map_err(status_of)?;
    let body = http_body_util::StreamBody::new(futures::stream::unfold(Some(events), next_chunk));
    let mut response = http::Response::new(Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    Ok(response)
}

/// The single message of a unary gRPC request body (length-prefixed, uncompressed).
fn the_one_message(body: Bytes) -> Result<Bytes, Status> {
    if body.len() < GRPC_PREFIX_LEN {
        return Err(Status::invalid_argument(
            "the request holds no gRPC message",
        ));
    }
    if body[0] != 0 {
        return Err(Status::unimplemented(
            "compressed requests are not supported",
        ));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != GRPC_PREFIX_LEN + len {
        return Err(Status::invalid_argument(
            "the request must hold exactly one gRPC message",
        ));
    }
    Ok(body.slice(GRPC_PREFIX_LEN..))
}

/// The next piece of the response body: every event the watcher has pending, joined
/// into one chunk (one DATA write), or at the end the `grpc-status: 0` trailer.
async fn next_chunk(
    events: Option<mpsc::Receiver<SharedEvent>>,
) -> Option<(
    Result<Frame<Bytes>, Infallible>,
    Option<mpsc::Receiver<SharedEvent>>,
)> {
    let mut events = events?;
    let Some(first) = events.recv().await else {
        let mut trailers = http::HeaderMap::new();
        trailers.insert(Status::GRPC_STATUS, http::HeaderValue::from_static("0"));
        return Some((Ok(Frame::trailers(trailers)), None));
    };
    let chunk = match events.try_recv() {
        // Just one: its shared bytes as they are, no copy.
        Err(_) => first.grpc_frame,
        Ok(second) => {
            let mut chunk = BytesMut::with_capacity(first.grpc_frame.len() * 2);
            chunk.extend_from_slice(&first.grpc_frame);
            chunk.extend_from_slice(&second.grpc_frame);
            while let Ok(more) = events.try_recv() {
                chunk.extend_from_slice(&more.grpc_frame);
            }
            chunk.freeze()
        }
    };
    Some((Ok(Frame::data(chunk)), Some(events)))
}

/// Starts following a session for a `WatchSession` request: the request's batch window
/// (unset: the coordinator's default), then [`watch::session_events`].
pub(crate) async fn session_events(
    mesh: &Arc<Mesh>,
    request: v1::WatchSessionRequest,
) -> Result<mpsc::Receiver<SharedEvent>, MeshError> {
    let window = request
        .batch_window_ms
        .map_or(mesh.config.watch_batch_window, |ms| {
            Duration::from_millis(u64::from(ms))
        });
    watch::session_events(mesh, &request.session_id, request.from_seq, window).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &[u8]) -> Bytes {
        let mut body = vec![0];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(message);
        Bytes::from(body)
    }

    #[test]
    fn a_request_body_must_hold_exactly_one_uncompressed_message() {
        let message = v1::WatchSessionRequest {
            session_id: "s".into(),
            from_seq: 3,
            batch_window_ms: Some(0),
        }
        .encode_to_vec();
        let body = framed(&message);
        assert_eq!(the_one_message(body.clone()).unwrap(), &message[..]);

        let code = |body: Bytes| the_one_message(body).unwrap_err().code();
        assert_eq!(
            code(Bytes::from_static(&[0, 0])),
            tonic::Code::InvalidArgument
        );
        let mut two = body.to_vec();
        two.extend_from_slice(&body);
        assert_eq!(code(Bytes::from(two)), tonic::Code::InvalidArgument);
        let mut compressed = body.to_vec();
        compressed[0] = 1;
        assert_eq!(code(Bytes::from(compressed)), tonic::Code::Unimplemented);
    }

    #[tokio::test]
    async fn pending_events_leave_as_one_chunk_then_the_ok_trailer() {
        let (tx, rx) = mpsc::channel(8);
        let events: Vec<SharedEvent> = (1..=3)
            .map(|seq| {
                SharedEvent::new(v1::SessionEvent {
                    seq,
                    ..Default::default()
                })
            })
            .collect();
        for event in &events {
            tx.send(event.clone()).await.unwrap();
        }
        drop(tx);
        let (chunk, rest) = next_chunk(Some(rx)).await.unwrap();
        let chunk = chunk.unwrap().into_data().unwrap();
        let joined: Vec<u8> = events.iter().flat_map(|e| e.grpc_frame.to_vec()).collect();
        assert_eq!(chunk, joined, "three framed events, in order, in one chunk");
        let (end, rest) = next_chunk(rest).await.unwrap();
        let trailers = end.unwrap().into_trailers().unwrap();
        assert_eq!(trailers[Status::GRPC_STATUS], "0");
        assert!(next_chunk(rest).await.is_none());
    }
}
