//! `GET /metrics` over HTTP/1.1, served by shard 0: enough HTTP for
//! Prometheus and `curl`, one connection at a time with a deadline, so a
//! scraper that stalls cannot hold memory or a task for long.

use std::rc::Rc;
use std::time::Duration;

use engine::rt::{Listener, Runtime};
use futures::io::{AsyncReadExt, AsyncWriteExt};

use crate::shard::Shard;

/// The longest request head accepted.
const REQUEST_BYTES_MAX: usize = 8 << 10;
/// A scrape must be read and answered within this.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(10);

/// Serves scrapes on `listener` until the shard shuts down.
pub async fn serve<R: Runtime>(shard: Rc<Shard<R>>, listener: R::Listener) {
    loop {
        let accepted = {
            let stop = std::pin::pin!(shard.shutdown.wait());
            match futures::future::select(std::pin::pin!(listener.accept()), stop).await {
                futures::future::Either::Left((r, _)) => r,
                futures::future::Either::Right(_) => return,
            }
        };
        let Ok((stream, _)) = accepted else { continue };
        let deadline = shard.rt.now() + SCRAPE_DEADLINE;
        let _ = engine::rt::until(&shard.rt, deadline, respond(&shard, stream)).await;
    }
}

async fn respond<R: Runtime>(shard: &Rc<Shard<R>>, mut stream: R::Stream) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > REQUEST_BYTES_MAX {
            let _ =
                stream.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n").await;
            return;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let response = match (method, path) {
        (b"GET", b"/metrics") => {
            let body = crate::metrics::encode::encode(shard.metrics_snapshots().await);
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        (b"GET", _) => {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 23\r\nConnection: close\r\n\r\nonly /metrics is here\r\n".into()
        }
        _ => "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.close().await;
}
