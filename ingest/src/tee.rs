//! A body copied as it streams through the gateway: up to a limit, never held whole,
//! the copy told how the body ended (whole, broken off, or dropped unread).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Up to `limit` bytes of a body, and whether that is all of it.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    pub(crate) bytes: Vec<u8>,
    pub(crate) limit: usize,
    pub(crate) over: bool,
    pub(crate) complete: bool,
}

impl Captured {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            ..Default::default()
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        let room = self.limit.saturating_sub(self.bytes.len());
        if data.len() > room {
            self.over = true;
        }
        self.bytes
            .extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
    }

    pub(crate) fn end(&mut self) {
        self.complete = !self.over;
    }
}

/// A body on its way through the gateway, copied (up to the limit) as it streams.
pub(crate) struct Tee<C: BodyCopy> {
    pub(crate) inner: Incoming,
    pub(crate) copy: C,
}

/// What a [`Tee`] does with what passes through it.
pub(crate) trait BodyCopy: Send + Unpin {
    /// A data frame passed.
    fn data(&mut self, data: &[u8]);
    /// The body ended: whole (`None`), or broken off (`Some(the error)`).
    fn ended(&mut self, error: Option<String>);
    /// The tee was dropped; `at_end` when its body had been read to the end.
    fn dropped(&mut self, at_end: bool);
}

impl<C: BodyCopy> Body for Tee<C> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.copy.data(data);
                }
                if this.inner.is_end_stream() {
                    this.copy.ended(None);
                }
            }
            Poll::Ready(None) => this.copy.ended(None),
            Poll::Ready(Some(Err(e))) => this.copy.ended(Some(e.to_string())),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<C: BodyCopy> Drop for Tee<C> {
    fn drop(&mut self) {
        let at_end = self.inner.is_end_stream();
        self.copy.dropped(at_end);
    }
}
