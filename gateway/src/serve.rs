//! The HTTP server loop. `axum::serve` has no limits a hostile client would notice, so this
//! runs hyper directly with:
//!
//! - a header read timeout: a client that connects and never finishes its request (or its
//!   WebSocket handshake) is dropped after [`HEADER_TIMEOUT`] instead of holding a task forever;
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
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
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
