//! A tower layer that makes an oversized request read RESOURCE_EXHAUSTED.
//!
//! tonic decodes unary requests itself, before any handler runs, and reports a message
//! over `max_decoding_message_size` as OUT_OF_RANGE in the response's trailers (or in a
//! trailers-only response's headers). gRPC names that case RESOURCE_EXHAUSTED, and so
//! does our contract. The handler never sees the request, so the correction has to sit
//! on the HTTP response: this layer rewrites exactly that status and nothing else.

use crate::errors::fix_oversize_status;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Maps a response so its gRPC status (headers or trailers) reports oversize correctly.
pub fn correct_oversize_status(
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
