//! The HTTP server loop. `axum::serve` has no limits a hostile client would notice, so this
//! runs hyper directly with:
//!
//! - a header read timeout: a client that connects and never finishes its request (or its
//!   WebSocket handshake) is dropped after [`HEADER_TIMEOUT`] instead of holding a task forever;
//! - a body read timeout: a request whose body has not fully arrived [`BODY_TIMEOUT`] after its
//!   headers fails (400) and its connection closes, so slow bodies cannot hold connection slots
//!   (or a login's turn) for long;
//! - a cap on open connections: past [`MAX_CONNECTIONS`], new ones wait in the kernel's backlog
//!   instead of costing memory;
//! - the client's address in each request (`ConnectInfo`), for loopback-only endpoints and
//!   per-address login limits;
//! - graceful shutdown: in-flight requests finish, upgraded WebSockets close themselves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// How long a client has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send its request body, from the end of its headers. The largest
/// body (a WHEP offer, 64 KiB) takes well under a second on any link a camera is watched over.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 2048;

/// Serves `router` on `listener` until `shutdown` resolves, then waits (at most 5 s) for open
/// connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Flips when the server stops: each connection then finishes its request and closes.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(ok) => ok,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(|body| axum::body::Body::new(TimedBody::new(body)));
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            router.clone().oneshot(request)
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            // `wait_for`'s guard must not live across an await: map it to () at once.
            let stop = async { stopping.wait_for(|s| *s).await.map(|_| ()) };
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    stopping_tx.send_replace(true);
    // Every connection holds a permit until it ends: all permits back means all closed.
    let all = u32::try_from(MAX_CONNECTIONS).expect("fits");
    if tokio::time::timeout(Duration::from_secs(5), slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 5 s; closing anyway");
    }
    Ok(())
}

/// A request body that fails once [`BODY_TIMEOUT`] has passed without it ending.
struct TimedBody {
    inner: Incoming,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl TimedBody {
    fn new(inner: Incoming) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(BODY_TIMEOUT)),
        }
    }
}

/// The error a timed-out body reads as (the handler's extractor turns it into a 400).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {BODY_TIMEOUT:?}")]
struct BodyTimeout;

impl http_body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future as _;
        use std::task::Poll;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
