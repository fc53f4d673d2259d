//! The accept loop under the router: HTTP/1.1 connections with a header read
//! timeout (which also closes a keep-alive connection idle that long), a cap on open
//! connections, and graceful shutdown. axum's own `serve` has none of these knobs; a
//! client that opens connections and sends nothing, or sends its headers a byte at a
//! time, would otherwise hold them for ever. Bodies are read (with their own
//! timeout) by the `read_body` middleware, before a request takes a handling permit.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

/// What a listener allows its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From a connection's first byte of a request (or from the end of the last
    /// answer on a kept-alive connection) to the end of its headers.
    pub header_timeout: Duration,
    /// Connections open at once; past it, new ones are closed as soon as accepted
    /// until some close.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// The `[limits]` of a listener, its connection cap fitted under this process's
    /// open-files limit ([`connection_cap`]), with a warning when that lowers it.
    pub fn of(limits: &super::limits::Limits) -> Self {
        let open_files = open_files_limit();
        let cap = connection_cap(limits.max_connections, open_files);
        if cap < limits.max_connections {
            tracing::warn!(
                open_files,
                configured = limits.max_connections,
                cap,
                "the open-files limit lowers the connection cap; raise it (ulimit -n, LimitNOFILE=)"
            );
        }
        Self {
            header_timeout: limits.header_timeout,
            max_connections: cap,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes; requests under way are
/// then finished (idle connections closed) before this returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closed) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut refused_at: Option<std::time::Instant> = None;
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was
                    // accepted: keep serving the connections there are.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
        let Ok(permit) = open.clone().try_acquire_owned() else {
            if refused_at.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(
                    max = limits.max_connections,
                    "connection limit reached: closing new connections until some close"
                );
                refused_at = Some(std::time::Instant::now());
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let mut closed = closed.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(remote));
                    router.clone().oneshot(request.map(axum::body::Body::new))
                });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = async { drop(closed.wait_for(|c| *c).await) } => {
                    // Shutting down: finish the request under way, take no other.
                    connection.as_mut().graceful_shutdown();
                    connection.as_mut().await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %remote, "connection ended");
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// This process's limit of open files (the soft one), from `/proc/self/limits` on
/// Linux; `None` where that cannot be read.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// File descriptors kept for what is not a client connection: the database, the
/// listeners, outgoing alert connections, logs.
pub const RESERVED_FILES: u64 = 256;

/// The connection cap in force: the one configured, lowered to fit under the open
/// files limit (so the cap, not "too many open files", is what turns clients away).
pub fn connection_cap(configured: usize, open_files: Option<u64>) -> usize {
    match open_files {
        Some(files) => {
            let fits = files.saturating_sub(RESERVED_FILES).max(16);
            configured.min(usize::try_from(fits).unwrap_or(usize::MAX))
        }
        None => configured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_under_the_open_files_limit_with_room_for_the_rest() {
        assert_eq!(connection_cap(10_000, Some(1024)), 768);
        assert_eq!(connection_cap(10_000, Some(1_048_576)), 10_000);
        assert_eq!(connection_cap(10_000, None), 10_000);
        assert_eq!(connection_cap(10_000, Some(100)), 16);
    }

    #[test]
    fn this_process_limit_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(open_files_limit().is_some_and(|n| n > 0));
        }
    }
}
