//! The HTTP listener: the router on hyper HTTP/1 connections with the bounds `axum::serve`
//! does not set (it installs no timer, so hyper's header-read timeout never fires):
//!
//! - **header read**: a client must send a request's whole head within
//!   [`ConnectionLimits::header_read_timeout`]. hyper starts that clock whenever the
//!   connection waits for a head, so it bounds a client that trickles its headers (slowloris),
//!   one that connects and sends nothing, and an idle keep-alive connection alike;
//! - **head size**: hyper refuses heads over [`HYPER_MAX_HEAD_BYTES`] or
//!   [`HYPER_MAX_HEADERS`] headers with a bare 431; below that, the app's own check
//!   ([`crate::middleware`]) answers 431 in the API's error shape at [`MAX_HEAD_BYTES`] /
//!   [`MAX_HEADERS`], so a client normally meets the documented shape;
//! - **graceful shutdown**: on `shutdown` no new connection is accepted and open ones finish
//!   their in-flight request (bounded by [`ConnectionLimits::drain_timeout`]).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Default of `[server] header_read_timeout_ms`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may take to finish after shutdown begins.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (request line and headers) the app answers normally, in bytes.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// Most request headers the app answers normally.
pub const MAX_HEADERS: usize = 100;
/// hyper's own limits, above the app's so that the app's shaped 431 is what clients meet.
pub const HYPER_MAX_HEAD_BYTES: usize = 256 * 1024;
/// See [`HYPER_MAX_HEAD_BYTES`].
pub const HYPER_MAX_HEADERS: usize = 200;

/// Bounds on one connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest wait for a request's head (also the longest idle keep-alive).
    pub header_read_timeout: Duration,
    /// Longest wait for open connections after shutdown begins.
    pub drain_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains open connections.
/// Each request carries `ConnectInfo<SocketAddr>` of its peer.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(HYPER_MAX_HEADERS)
        .max_header_size(HYPER_MAX_HEAD_BYTES)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            app.clone().oneshot(req)
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = stop.cancelled() => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    stop.cancel();
    connections.close();
    if tokio::time::timeout(limits.drain_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "open connections did not finish within {:?}; closing them",
            limits.drain_timeout
        );
    }
}
