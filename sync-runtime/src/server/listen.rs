//! Serving the router on a socket, with the bounds a server on the internet needs: at most
//! `max_connections` open at once (more wait in the listen backlog, so file descriptors never run
//! out), a `header_timeout` for each request's headers (which also closes a kept-alive
//! connection that sends nothing more, and bounds a TLS handshake likewise), and graceful
//! shutdown. Bodies are bounded in time where they are read (`body_timeout`, in the routes).

use crate::server::error::envelope;
use crate::server::tls::ServerTls;
use crate::server::{Server, router};
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long requests in flight may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `server` on `listener` until `shutdown` completes, then lets the requests in flight
/// finish.
pub async fn serve(
    listener: TcpListener,
    server: Arc<Server>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_on(listener, server, None, shutdown).await
}

/// [`serve`] over HTTPS: each connection's TLS handshake must end within the header timeout.
pub async fn serve_tls(
    listener: TcpListener,
    server: Arc<Server>,
    tls: &ServerTls,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_on(listener, server, Some(tls.acceptor()), shutdown).await
}

async fn serve_on(
    listener: TcpListener,
    server: Arc<Server>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (header_timeout, max_connections) =
        (server.config.header_timeout, server.config.max_connections);
    let app = router(server);
    let open = Arc::new(Semaphore::new(max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = open.clone().acquire_owned() => slot.map_err(io::Error::other)?,
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a moment rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            app: app.clone(),
            peer,
            header_timeout,
            watcher: graceful.watcher(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection.serve(stream).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => connection.serve(stream).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake took too long"),
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running at the end of the shutdown grace period");
    }
    Ok(())
}

/// One accepted connection, to be served over its stream (plain, or TLS once shaken hands).
struct Connection {
    app: axum::Router,
    peer: SocketAddr,
    header_timeout: Duration,
    watcher: Watcher,
}

impl Connection {
    async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, stream: S) {
        let peer = self.peer;
        let service =
            self.app
                .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                    req
                });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout);
        let connection = http.serve_connection(
            TokioIo::new(JsonErrorIo::new(stream)),
            TowerToHyperService::new(service),
        );
        let _ = self.watcher.watch(connection).await;
    }
}

/// A connection whose answers from hyper itself (a malformed request, headers too large: 400,
/// 414, 431 with no body, written before any handler runs) get the protocol's JSON body like
/// every other error. Everything else passes through untouched.
struct JsonErrorIo<S> {
    inner: S,
    /// An error answer being written in place of hyper's: its bytes, how many are written, and
    /// how many bytes of hyper's own it stands for.
    rewritten: Option<(Vec<u8>, usize, usize)>,
}

impl<S> JsonErrorIo<S> {
    fn new(inner: S) -> Self {
        JsonErrorIo {
            inner,
            rewritten: None,
        }
    }
}

/// hyper's own error answer with the JSON body, if `head` is one: a complete 4xx head with an
/// empty body and no content type (every answer of the router's has one).
fn with_json_body(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ")?;
    if !rest.starts_with('4') || !text.ends_with("\r\n\r\n") {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("content-type:") || !lower.contains("content-length: 0\r\n") {
        return None;
    }
    let status = StatusCode::from_bytes(rest.get(..3)?.as_bytes()).ok()?;
    let body = envelope(status);
    let start = lower.find("content-length: 0\r\n")?;
    let end = start + "content-length: 0\r\n".len();
    let mut out = String::with_capacity(text.len() + body.len() + 64);
    out.push_str(&text[..start]);
    out.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    ));
    out.push_str(&text[end..]);
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrorIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> JsonErrorIo<S> {
    /// Writes the rest of a rewritten answer; done, it reports hyper's bytes as written.
    fn poll_rewritten(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((bytes, written, stands_for)) = &mut self.rewritten {
            if *written == bytes.len() {
                let n = *stands_for;
                self.rewritten = None;
                return Poll::Ready(Ok(n));
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(0))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrorIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.rewritten.is_none() {
            match with_json_body(buf) {
                Some(bytes) => self.rewritten = Some((bytes, 0, buf.len())),
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
            }
        }
        self.poll_rewritten(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.rewritten.is_none() {
            let mut filled = bufs.iter().filter(|b| !b.is_empty());
            match (filled.next(), filled.next()) {
                (Some(only), None) if with_json_body(only).is_some() => {
                    return self.poll_write(cx, &only[..]);
                }
                _ => return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
            }
        }
        self.poll_rewritten(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_own_empty_error_answers_are_rewritten() {
        let hyper_431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(with_json_body(hyper_431).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(body).unwrap()["error"],
            "too_large"
        );
        for untouched in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n",
            b"{\"error\": \"HTTP/1.1 400 \"}",
        ] {
            assert!(with_json_body(untouched).is_none());
        }
    }
}
