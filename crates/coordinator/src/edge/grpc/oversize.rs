//! A tower layer that makes an oversized request read RESOURCE_EXHAUSTED.
//!
//! tonic decodes unary requests itself, before any handler runs, and reports a message
//! over `max_decoding_message_size` as OUT_OF_RANGE in the response's trailers (or in a
//! trailers-only response's headers). gRPC names that case RESOURCE_EXHAUSTED, and so
//! does our contract. The handler never sees the request, so the correction has to sit
//! on the HTTP response: this layer rewrites exactly that status and nothing else.

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// tonic's decoder reports an inbound message over the size limit as OUT_OF_RANGE with
/// this text; gRPC (and our contract) name that RESOURCE_EXHAUSTED.
pub(crate) const OVERSIZE_TEXT: &str = "message length too large";

/// True when gRPC status headers (or trailers) carry tonic's oversize OUT_OF_RANGE.
fn is_oversize_status(headers: &http::HeaderMap) -> bool {
    headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            // On the wire grpc-message is percent-encoded (spaces become %20).
            .is_some_and(|m| m.replace("%20", " ").contains(OVERSIZE_TEXT))
}

/// Rewrites tonic's oversize OUT_OF_RANGE to RESOURCE_EXHAUSTED in place.
fn fix_oversize_status(headers: &mut http::HeaderMap) {
    if is_oversize_status(headers) {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from(tonic::Code::ResourceExhausted as i32),
        );
    }
}

/// Maps a response so its gRPC status (headers or trailers) reports oversize correctly.
pub(crate) fn correct_oversize_status(
    response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let (mut parts, body) = response.into_parts();
    fix_oversize_status(&mut parts.headers);
    http::Response::from_parts(
        parts,
        tonic::body::Body::new(CorrectTrailers { inner: body }),
    )
}

/// Passes data frames through and corrects the trailers frame.
struct CorrectTrailers {
    inner: tonic::body::Body,
}

impl HttpBody for CorrectTrailers {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        polled.map(|frame| {
            frame.map(|frame| {
                frame.map(|frame| match frame.into_trailers() {
                    Ok(mut trailers) => {
                        fix_oversize_status(&mut trailers);
                        Frame::trailers(trailers)
                    }
                    Err(data) => data,
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_oversize_out_of_range_is_rewritten() {
        let status = |code: &str, message: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-status", code.parse().unwrap());
            headers.insert("grpc-message", message.parse().unwrap());
            fix_oversize_status(&mut headers);
            headers["grpc-status"].to_str().unwrap().to_string()
        };
        let oversize =
            "Error,%20decoded%20message%20length%20too%20large:%20found%202097157%20bytes";
        assert_eq!(status("11", oversize), "8");
        assert_eq!(
            status("11", "event%20seq%2099%20is%20in%20the%20future"),
            "11"
        );
        assert_eq!(status("5", oversize), "5");
    }
}
