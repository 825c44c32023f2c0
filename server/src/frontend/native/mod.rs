//! The native protocol's connections: a reader that cuts frames and starts
//! their work in order, a writer that sends responses as they complete, and
//! a byte budget between them. A request's bytes (and, for a fetch, its
//! largest possible response) are taken from the budget before its work
//! starts and returned once its response is written; when the budget is
//! spent the reader stops reading, so a client that sends faster than the
//! broker answers, or reads responses slower, is pushed back by TCP rather
//! than buffered. The decoding of requests into service calls is in
//! [`codec`].

mod codec;
pub(crate) use codec::code;

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use engine::rt::{Runtime, Stream};
use futures::StreamExt;
use futures::channel::mpsc;
use futures::future::{Either, select};
use futures::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use protocol::ErrorCode;
use protocol::api::{ApiKey, Request};
use protocol::frame::{
    Decoded, FrameDecoder, LENGTH_BYTES, PROTOCOL_VERSION, REQUEST_HEADER_BYTES, RequestHeader, error_response,
};

use crate::metrics::ShardMetrics;
use crate::service::ConnContext;
use crate::shard::Shard;
use crate::util::budget::{Budget, Permit};
use crate::util::signal::Signal;

/// Reads ask the socket for at least this much...
const READ_CHUNK_BYTES: usize = 64 << 10;
/// ...and at most this much.
const READ_BYTES_MAX: usize = 1 << 20;
/// What an error reply takes from the budget (its frame and message).
const ERROR_REPLY_BYTES: u64 = 1100;
/// Once the broker shuts down, a client that does not read its responses
/// gets this long before its connection is dropped.
const SHUTDOWN_WRITE_GRACE: Duration = Duration::from_secs(5);
/// Responses are coalesced into writes of up to this much; larger pieces
/// (stored batches) are written as they are.
const WRITE_COALESCE_BYTES: usize = 256 << 10;

struct Outgoing {
    frame: Vec<Bytes>,
    _permit: Option<Permit>,
}

type Tx = mpsc::UnboundedSender<Outgoing>;

/// Serves one client connection until it closes or the broker shuts down.
pub async fn serve<R: Runtime>(shard: Rc<Shard<R>>, stream: R::Stream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    tracing::debug!(%peer, shard = %shard.id, "connection opened");
    let (reader, writer) = stream.split();
    let (tx, rx) = mpsc::unbounded();
    let broken = Rc::new(Cell::new(false));
    let writer_task = shard.rt.spawn(write_loop(shard.rt.clone(), writer, rx, broken.clone(), shard.shutdown.clone()));
    let budget = {
        let shard = shard.clone();
        Budget::new(shard.config.limits.connection_inflight_bytes_max as u64, move |delta| {
            ShardMetrics::add(&shard.metrics.inflight_bytes, delta);
        })
    };
    let mut ctx = ConnContext { client_id: String::new(), peer, shard: shard.id };
    let end = read_loop(&shard, reader, &tx, &budget, &broken, &mut ctx).await;
    drop(tx);
    // In-flight requests finish and their responses are written first.
    writer_task.await;
    budget.close();
    tracing::debug!(%peer, shard = %shard.id, client = ctx.client_id, end, "connection closed");
}

/// Refuses a connection over the limit with one error frame.
pub async fn refuse<S: Stream>(stream: S, code: ErrorCode, message: &str) {
    let (_, mut writer) = stream.split();
    for piece in error_response(0, code, message) {
        if writer.write_all(&piece).await.is_err() {
            return;
        }
    }
    let _ = writer.close().await;
}

async fn read_loop<R: Runtime>(
    shard: &Rc<Shard<R>>,
    mut reader: ReadHalf<R::Stream>,
    tx: &Tx,
    budget: &Budget,
    broken: &Rc<Cell<bool>>,
    ctx: &mut ConnContext,
) -> &'static str {
    let limits = &shard.config.limits;
    let decoder = FrameDecoder { frame_bytes_max: limits.frame_bytes_max };
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut handshaken = false;
    // Bytes of an oversized frame still to be skipped.
    let mut skip = 0usize;
    // Bytes the frame at the front still lacks.
    let mut need = 0usize;
    loop {
        if skip > 0 {
            let n = skip.min(buf.len());
            let _ = buf.split_to(n);
            skip -= n;
        }
        // Cut and start every whole frame in the buffer.
        while skip == 0 {
            let used = match decoder.decode(&buf, REQUEST_HEADER_BYTES) {
                Decoded::Frame { used } => used,
                Decoded::Need(total) => {
                    need = total - buf.len();
                    break;
                }
                Decoded::Lost(e) => {
                    send(tx, error_response(0, ErrorCode::MALFORMED_REQUEST, &e.to_string()), None);
                    return "framing lost";
                }
                Decoded::TooLarge { length } => {
                    // Answer with the request's id: read up to it first.
                    if buf.len() < LENGTH_BYTES + REQUEST_HEADER_BYTES {
                        need = LENGTH_BYTES + REQUEST_HEADER_BYTES - buf.len();
                        break;
                    }
                    let request_id = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
                    let message =
                        format!("frame of {length} bytes exceeds limits.frame_bytes_max {}", limits.frame_bytes_max);
                    let Some(permit) = acquire(shard, budget, ERROR_REPLY_BYTES).await else { return "shutdown" };
                    send(tx, error_response(request_id, ErrorCode::FRAME_TOO_LARGE, &message), Some(permit));
                    skip = LENGTH_BYTES + length;
                    break;
                }
            };
            let frame = buf.split_to(used).freeze().slice(LENGTH_BYTES..);
            let (header, body) = RequestHeader::decode(&frame).expect("the decoder checked the length");
            let request = Request::decode(&header, body);
            // Every request takes its bytes, and room for its response, from
            // the budget before anything is done for it: error replies too,
            // so a client that never reads cannot queue them without bound.
            let response_bytes = match &request {
                Ok(Request::Fetch(f)) => {
                    (f.max_bytes as usize).clamp(1, limits.fetch_bytes_max) + limits.batch_bytes_max as usize
                }
                _ => ERROR_REPLY_BYTES as usize,
            };
            let Some(permit) = acquire(shard, budget, (frame.len() + response_bytes) as u64).await else {
                return "shutdown";
            };
            let request = match request {
                Ok(r) => r,
                Err(e) => {
                    send(tx, error_response(header.request_id, e.code(), &e.to_string()), Some(permit));
                    continue;
                }
            };
            if !handshaken && !matches!(request, Request::Handshake(_)) {
                let message = "send a Handshake request first";
                send(tx, error_response(header.request_id, ErrorCode::HANDSHAKE_REQUIRED, message), Some(permit));
                continue;
            }
            if let Request::Handshake(h) = &request {
                if h.protocol_version != PROTOCOL_VERSION {
                    let message = format!(
                        "protocol version {} is not supported; this broker speaks {PROTOCOL_VERSION}",
                        h.protocol_version
                    );
                    send(tx, error_response(header.request_id, ErrorCode::UNSUPPORTED_VERSION, &message), Some(permit));
                    continue;
                }
                handshaken = true;
                ctx.client_id.clone_from(&h.client);
            }
            let reply = codec::Reply { tx: tx.clone(), request_id: header.request_id, version: header.api_version };
            codec::start(shard, ctx, reply, request, permit).await;
        }
        if broken.get() {
            return "write failed";
        }
        // Read more, unless the broker is shutting down. The buffer grows
        // only as bytes arrive (a frame's declared length is not trusted).
        let at = buf.len();
        let want = need.clamp(READ_CHUNK_BYTES, READ_BYTES_MAX);
        need = 0;
        buf.resize(at + want, 0);
        let read = {
            let stop = pin!(shard.shutdown.wait());
            match select(pin!(reader.read(&mut buf[at..])), stop).await {
                Either::Left((r, _)) => Some(r),
                Either::Right(_) => None,
            }
        };
        match read {
            None => {
                buf.truncate(at);
                return "shutdown";
            }
            Some(Ok(0)) => {
                buf.truncate(at);
                return "closed by peer";
            }
            Some(Ok(n)) => buf.truncate(at + n),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "read failed");
                return "read failed";
            }
        }
    }
}

/// Takes `units` from the connection's budget, waiting while it is spent;
/// `None` once the broker shuts down (the request is then not started).
async fn acquire<R: Runtime>(shard: &Rc<Shard<R>>, budget: &Budget, units: u64) -> Option<Permit> {
    let stop = pin!(shard.shutdown.wait());
    match select(pin!(budget.acquire(units)), stop).await {
        Either::Left((permit, _)) => permit,
        Either::Right(_) => None,
    }
}

fn send(tx: &Tx, frame: Vec<Bytes>, permit: Option<Permit>) {
    // The writer outlives the reader: a send fails only if the writer gave up
    // after a failed write, and then the response has nowhere to go anyway.
    let _ = tx.unbounded_send(Outgoing { frame, _permit: permit });
}

/// The API a request frame names, for metrics.
fn api_name(request: &Request) -> &'static str {
    let key: ApiKey = request.api_key();
    key.name()
}

async fn write_loop<R: Runtime>(
    rt: R,
    mut writer: WriteHalf<R::Stream>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    broken: Rc<Cell<bool>>,
    shutdown: Rc<Signal>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_COALESCE_BYTES);
    let mut written: Vec<Outgoing> = Vec::new();
    while let Some(first) = rx.next().await {
        let mut next = Some(first);
        let mut ok = true;
        // Everything ready now goes out in as few writes as possible.
        while let Some(out) = next {
            for piece in &out.frame {
                if !ok {
                    break;
                }
                if piece.len() >= WRITE_COALESCE_BYTES / 4 {
                    ok = flush(&rt, &mut writer, &mut buf, &shutdown).await
                        && bounded(&rt, &shutdown, writer.write_all(piece)).await;
                } else {
                    buf.extend_from_slice(piece);
                    if buf.len() >= WRITE_COALESCE_BYTES {
                        ok = flush(&rt, &mut writer, &mut buf, &shutdown).await;
                    }
                }
            }
            written.push(out);
            next = if ok { rx.try_recv().ok() } else { None };
        }
        ok = ok && flush(&rt, &mut writer, &mut buf, &shutdown).await;
        // Permits go back only once their responses are on the socket.
        written.clear();
        if !ok {
            broken.set(true);
            // Nothing more can be sent: drain, so in-flight work can finish
            // and release its budget.
            while rx.next().await.is_some() {}
            break;
        }
    }
    let _ = bounded(&rt, &shutdown, writer.close()).await;
}

/// A socket write that gives up `SHUTDOWN_WRITE_GRACE` after the shutdown
/// began: a client that stopped reading cannot hold the broker open.
async fn bounded<R: Runtime>(rt: &R, shutdown: &Rc<Signal>, write: impl Future<Output = std::io::Result<()>>) -> bool {
    let deadline = async {
        shutdown.wait().await;
        rt.sleep(SHUTDOWN_WRITE_GRACE).await;
    };
    match select(pin!(write), pin!(deadline)).await {
        Either::Left((r, _)) => r.is_ok(),
        Either::Right(_) => false,
    }
}

async fn flush<R: Runtime>(
    rt: &R,
    writer: &mut WriteHalf<R::Stream>,
    buf: &mut Vec<u8>,
    shutdown: &Rc<Signal>,
) -> bool {
    if buf.is_empty() {
        return true;
    }
    let ok = bounded(rt, shutdown, writer.write_all(buf)).await;
    buf.clear();
    ok
}
