//! One multiplexed connection to a broker: requests are written by a writer
//! task in the order they are sent, responses are matched to their requests
//! by id by a reader task, so any number of requests can be in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use protocol::ErrorCode;
use protocol::api::{ApiKey, HandshakeRequest, Request, Response};
use protocol::frame::{
    Decoded, FrameDecoder, PROTOCOL_VERSION, RESPONSE_HEADER_BYTES, ResponseHeader, decode_error_message,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::error::{ClientError, Result};

/// The largest response frame accepted; a fetch is bounded by its `max_bytes`.
const RESPONSE_BYTES_MAX: usize = 256 << 20;
/// The write buffer: small frames gather in it; a piece at least this
/// long skips it.
const DIRECT_WRITE_BYTES_MIN: usize = 64 << 10;
/// Frames queued for the writer before `send` waits.
const WRITE_QUEUE_FRAMES: usize = 1024;

type Waiter = oneshot::Sender<Result<(ResponseHeader, Bytes)>>;

struct Shared {
    pending: Mutex<HashMap<u32, Waiter>>,
    /// Why the connection died, once it has.
    dead: Mutex<Option<ClientError>>,
    is_dead: AtomicBool,
}

impl Shared {
    fn fail_all(&self, error: &ClientError) {
        {
            let mut dead = self.dead.lock().expect("not poisoned");
            dead.get_or_insert(error.clone());
        }
        self.is_dead.store(true, Ordering::Release);
        let waiters: Vec<Waiter> = self.pending.lock().expect("not poisoned").drain().map(|(_, w)| w).collect();
        for w in waiters {
            let _ = w.send(Err(error.clone()));
        }
    }
}

/// A connection that has completed the handshake. Cheap to clone.
#[derive(Clone)]
pub struct Connection {
    tx: mpsc::Sender<Vec<Bytes>>,
    shared: Arc<Shared>,
    next_id: Arc<AtomicU32>,
    pub shards: u32,
    /// The broker shard serving this connection.
    pub shard: u32,
    /// Each shard's own port (empty if the broker has none).
    pub shard_ports: Vec<u16>,
    pub server: String,
}

impl Connection {
    pub async fn connect(addr: &str, client_name: &str) -> Result<Connection> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect { addr: addr.to_owned(), reason: e.to_string() })?;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_FRAMES);
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            dead: Mutex::new(None),
            is_dead: AtomicBool::new(false),
        });
        tokio::spawn(write_loop(write, rx, shared.clone()));
        tokio::spawn(read_loop(read, shared.clone()));
        let mut conn = Connection {
            tx,
            shared,
            next_id: Arc::new(AtomicU32::new(1)),
            shards: 0,
            shard: 0,
            shard_ports: Vec::new(),
            server: String::new(),
        };
        let hello =
            Request::Handshake(HandshakeRequest { protocol_version: PROTOCOL_VERSION, client: client_name.into() });
        match conn.call(&hello).await? {
            Response::Handshake(h) => {
                conn.shards = h.shards;
                conn.shard = h.shard;
                conn.shard_ports = h.shard_ports;
                conn.server = h.server;
            }
            other => return Err(ClientError::Protocol(format!("handshake answered with {other:?}"))),
        }
        Ok(conn)
    }

    pub fn is_dead(&self) -> bool {
        self.shared.is_dead.load(Ordering::Acquire)
    }

    fn dead_error(&self) -> ClientError {
        self.shared
            .dead
            .lock()
            .expect("not poisoned")
            .clone()
            .unwrap_or_else(|| ClientError::ConnectionLost("closed".into()))
    }

    /// Sends a request and waits for its response; broker errors become `ClientError::Broker`.
    pub async fn call(&self, request: &Request) -> Result<Response> {
        self.start_call(request).await?.finish().await
    }

    /// Queues a request on the connection (requests go out in the order
    /// they are queued) and returns the handle to its answer.
    pub async fn start_call(&self, request: &Request) -> Result<PendingCall> {
        let (waiter, rx) = oneshot::channel();
        let id = {
            let mut pending = self.shared.pending.lock().expect("not poisoned");
            // Ids wrap after 2^32 requests: never reuse one still waiting.
            let id = loop {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                if id != 0 && !pending.contains_key(&id) {
                    break id;
                }
            };
            pending.insert(id, waiter);
            id
        };
        // From here the guard forgets the id if this future is dropped.
        let call = PendingCall {
            rx,
            id,
            api_key: request.api_key(),
            shared: self.shared.clone(),
            conn: self.clone(),
            answered: false,
        };
        if self.is_dead() {
            return Err(self.dead_error());
        }
        if self.tx.send(request.encode(id)).await.is_err() {
            return Err(self.dead_error());
        }
        Ok(call)
    }

    /// Sends a request that gets no response (produce with acks `none`).
    pub async fn send_only(&self, request: &Request) -> Result<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).max(1);
        if self.is_dead() {
            return Err(self.dead_error());
        }
        self.tx.send(request.encode(id)).await.map_err(|_| self.dead_error())
    }
}

/// A request on the wire, waiting for its answer. Dropping it forgets the
/// request (its answer, if one comes, is discarded).
pub struct PendingCall {
    rx: oneshot::Receiver<Result<(ResponseHeader, Bytes)>>,
    id: u32,
    api_key: ApiKey,
    shared: Arc<Shared>,
    conn: Connection,
    /// The reader has removed the id already: it may belong to another call by now.
    answered: bool,
}

impl PendingCall {
    pub async fn finish(mut self) -> Result<Response> {
        let answer = (&mut self.rx).await;
        self.answered = true;
        let (header, body) = answer.map_err(|_| self.conn.dead_error())??;
        if !header.error.is_ok() {
            return Err(ClientError::broker(header.error, decode_error_message(body)));
        }
        Response::decode(self.api_key, body).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if !self.answered {
            self.shared.pending.lock().expect("not poisoned").remove(&self.id);
        }
    }
}

async fn write_loop(write: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<Bytes>>, shared: Arc<Shared>) {
    let mut w = BufWriter::with_capacity(DIRECT_WRITE_BYTES_MIN, write);
    while let Some(frame) = rx.recv().await {
        let mut next = Some(frame);
        let mut result = Ok(());
        while let Some(frame) = next {
            for piece in frame {
                // A piece at least as big as the buffer (a record batch)
                // goes to the socket as it is, behind what is buffered
                // (`BufWriter` does that): never copied in first.
                if let Err(e) = w.write_all(&piece).await {
                    result = Err(e);
                    break;
                }
            }
            next = if result.is_ok() { rx.try_recv().ok() } else { None };
        }
        if result.is_ok() {
            result = w.flush().await;
        }
        if let Err(e) = result {
            shared.fail_all(&ClientError::ConnectionLost(format!("write failed: {e}")));
            return;
        }
    }
    let _ = w.shutdown().await;
}

async fn read_loop(mut read: tokio::net::tcp::OwnedReadHalf, shared: Arc<Shared>) {
    let decoder = FrameDecoder { frame_bytes_max: RESPONSE_BYTES_MAX };
    let mut buf = BytesMut::with_capacity(256 << 10);
    loop {
        loop {
            match decoder.decode(&buf, RESPONSE_HEADER_BYTES) {
                Decoded::Frame { used } => {
                    let frame = buf.split_to(used).freeze().slice(4..);
                    let Ok((header, body)) = ResponseHeader::decode(&frame) else { unreachable!("length checked") };
                    let waiter = shared.pending.lock().expect("not poisoned").remove(&header.request_id);
                    match waiter {
                        Some(w) => {
                            let _ = w.send(Ok((header, body)));
                        }
                        None if header.request_id == 0 && !header.error.is_ok() => {
                            // A connection-level refusal (e.g. too many connections).
                            let message = decode_error_message(body);
                            shared.fail_all(&ClientError::broker(header.error, message));
                            return;
                        }
                        None => tracing::debug!(id = header.request_id, "response to no pending request"),
                    }
                }
                Decoded::Need(n) => {
                    buf.reserve(n.saturating_sub(buf.len()));
                    break;
                }
                Decoded::TooLarge { length } => {
                    shared.fail_all(&ClientError::Protocol(format!("response frame of {length} bytes")));
                    return;
                }
                Decoded::Lost(e) => {
                    shared.fail_all(&ClientError::Protocol(e.to_string()));
                    return;
                }
            }
        }
        match read.read_buf(&mut buf).await {
            Ok(0) => {
                shared.fail_all(&ClientError::ConnectionLost("closed by the broker".into()));
                return;
            }
            Ok(_) => {}
            Err(e) => {
                shared.fail_all(&ClientError::ConnectionLost(format!("read failed: {e}")));
                return;
            }
        }
    }
}

/// Maps a per-partition code to a result.
pub fn check(code: ErrorCode, what: impl FnOnce() -> String) -> Result<()> {
    if code.is_ok() { Ok(()) } else { Err(ClientError::broker(code, what())) }
}
