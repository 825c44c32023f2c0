//! The replication transport of one shard (docs/replication.md §4–5, in
//! its first form): one outbound connection per peer broker, over which
//! every message this shard's replicas send that peer goes one way, many
//! partitions' entries coalesced into one frame per kind per write; and
//! the connections peers opened to this broker's shared replication port,
//! whose entries go to the shard that owns each partition. A reply is a
//! message of its own on the replier's outbound connection, so nothing
//! waits for a response on the connection it sent on: a heartbeat never
//! queues behind a batch going the other way.
//!
//! Messages are lost when a connection fails (Raft resends what matters);
//! the outbox per peer is bounded, and a message that does not fit is
//! dropped the same way. Owned by its shard (`Rc`, `RefCell`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use engine::rt::{Runtime, Stream as _};
use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use protocol::ErrorCode;
use protocol::replica::{
    Body, ControllerCall, ControllerCallResponse, EpochFrame, FRAME_BYTES_MAX, FRAME_ENTRIES_MAX, FetchFrame,
    FetchResponseFrame, Frame, FrameHeader, Handshake, Kind, PeerMessage, Split, VoteFrame, VoteResponseFrame,
};
use protocol::types::NodeId;

use crate::ids::{PartitionId, TopicId, TopicPartition};

/// Messages one shard may queue for one peer before it drops them.
const OUTBOX_MESSAGES_MAX: usize = 65_536;
/// Batches one frame of fetch answers carries, at most: half the frame
/// limit, so one answer at its largest always fits.
const FRAME_DATA_BYTES_MAX: usize = FRAME_BYTES_MAX / 2;
/// A failed connection is tried again after this, doubling to a second.
const RECONNECT_MIN: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// How long a connection to a peer may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Where a call's caller waits for its answer.
type AnswerSender = oneshot::Sender<(ErrorCode, ControllerCallResponse)>;

/// The pseudo node a joining broker calls its contact by (ADR 29): no
/// broker has this id (`--node-id` is checked to be below it).
pub const CONTACT: NodeId = NodeId(u32::MAX);
/// Registering brokers' addresses a shard keeps a link to.
const STRANGERS_MAX: usize = 64;

/// How long a controller call waits for its answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn wire_tp(tp: TopicPartition) -> protocol::types::TopicPartition {
    protocol::types::TopicPartition::new(tp.topic.0, tp.partition.0)
}

fn local_tp(tp: protocol::types::TopicPartition) -> TopicPartition {
    TopicPartition { topic: TopicId(tp.topic.0), partition: PartitionId(tp.partition.0) }
}

enum Item {
    Message(TopicPartition, PeerMessage),
    /// A whole frame (a call or its answer).
    Frame(Frame),
}

/// What the reader hands the broker: one partition's message, a call to
/// answer, or the answer to a call of this broker.
pub enum Inbound {
    Message {
        from: NodeId,
        tp: TopicPartition,
        message: PeerMessage,
    },
    /// `peer`: the address the connection came from.
    Call {
        from: NodeId,
        header: FrameHeader,
        call: ControllerCall,
        peer: SocketAddr,
    },
    Answer {
        from: NodeId,
        header: FrameHeader,
        answer: ControllerCallResponse,
    },
}

pub struct Net<R: Runtime> {
    rt: R,
    pub me: NodeId,
    shard: u16,
    /// Every broker this shard may talk to, its own address too: the
    /// configured peers, then brokers that joined (ADR 29), and, while a
    /// broker joins, the contact it registers with.
    peers: RefCell<BTreeMap<NodeId, SocketAddr>>,
    /// Links to the addresses registrations came from (a joining broker's,
    /// which may not be a member yet, or may claim a member's id): used
    /// for their answers alone, at most [`STRANGERS_MAX`].
    strangers: RefCell<BTreeMap<SocketAddr, mpsc::Sender<Item>>>,
    outboxes: RefCell<BTreeMap<NodeId, mpsc::Sender<Item>>>,
    /// Calls waiting for their answer, with the node each went to: only
    /// that node's answer is taken (any node's for a call to the
    /// [`CONTACT`], which a joining broker knows by address alone).
    calls: RefCell<HashMap<u32, (NodeId, AnswerSender)>>,
    next_call: Cell<u32>,
    client_listen: String,
}

impl<R: Runtime> Net<R> {
    pub fn new(
        rt: R,
        me: NodeId,
        shard: u16,
        peers: BTreeMap<NodeId, SocketAddr>,
        client_listen: String,
    ) -> Rc<Net<R>> {
        Rc::new(Net {
            rt,
            me,
            shard,
            peers: RefCell::new(peers),
            strangers: RefCell::new(BTreeMap::new()),
            outboxes: RefCell::new(BTreeMap::new()),
            calls: RefCell::new(HashMap::new()),
            next_call: Cell::new(1),
            client_listen,
        })
    }

    /// The other brokers (not the contact of a join).
    pub fn peers(&self) -> Vec<NodeId> {
        self.peers.borrow().keys().copied().filter(|&n| n != self.me && n != CONTACT).collect()
    }

    /// Every broker, this one too, with its replication address.
    pub fn members(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.peers.borrow().iter().filter(|(n, _)| **n != CONTACT).map(|(n, a)| (*n, *a)).collect()
    }

    /// Whether `node` is a broker of the cluster as this shard knows it.
    pub fn knows(&self, node: NodeId) -> bool {
        node != CONTACT && self.peers.borrow().contains_key(&node)
    }

    /// The replication address of `node`, if this shard knows it.
    pub fn address_of(&self, node: NodeId) -> Option<SocketAddr> {
        self.peers.borrow().get(&node).copied()
    }

    /// Adds (or moves) `node` at `addr`; a moved node's link starts again.
    pub fn add_peer(&self, node: NodeId, addr: SocketAddr) {
        if self.peers.borrow_mut().insert(node, addr) != Some(addr) {
            self.outboxes.borrow_mut().remove(&node);
        }
    }

    /// Forgets `node`; its writer ends once its queue drains.
    pub fn remove_peer(&self, node: NodeId) {
        self.peers.borrow_mut().remove(&node);
        self.outboxes.borrow_mut().remove(&node);
    }

    fn outbox(self: &Rc<Self>, to: NodeId) -> Option<mpsc::Sender<Item>> {
        if let Some(tx) = self.outboxes.borrow().get(&to) {
            return Some(tx.clone());
        }
        let addr = self.address_of(to)?;
        let tx = self.open_link(to, addr, OUTBOX_MESSAGES_MAX);
        self.outboxes.borrow_mut().insert(to, tx.clone());
        Some(tx)
    }

    /// A queue of `capacity` items to `addr`, with its writer.
    fn open_link(self: &Rc<Self>, to: NodeId, addr: SocketAddr, capacity: usize) -> mpsc::Sender<Item> {
        let (tx, rx) = mpsc::channel(capacity);
        drop(self.rt.spawn(writer(self.clone(), to, addr, rx)));
        tx
    }

    fn push(self: &Rc<Self>, to: NodeId, item: Item) {
        let Some(mut tx) = self.outbox(to) else {
            tracing::debug!(node = to.0, "a message for a node that is no peer: dropped");
            return;
        };
        if tx.try_send(item).is_err() {
            tracing::debug!(node = to.0, "the outbox to a peer is full: a message is dropped");
        }
    }

    /// Sends one partition's message to a peer (lost if the link fails).
    pub fn send(self: &Rc<Self>, to: NodeId, tp: TopicPartition, message: PeerMessage) {
        self.push(to, Item::Message(tp, message));
    }

    /// Calls `to` (api and body are the caller's), and waits up to
    /// `timeout` for the answer; a call the link could not carry fails at
    /// once.
    pub async fn call(
        self: &Rc<Self>,
        to: NodeId,
        api: u16,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(ErrorCode, ControllerCallResponse), String> {
        let id = self.next_call.get();
        self.next_call.set(id.wrapping_add(1).max(1));
        let (tx, rx) = oneshot::channel();
        self.calls.borrow_mut().insert(id, (to, tx));
        let header = FrameHeader::request(Kind::ControllerCall, id, self.me, self.shard, 0);
        let frame = Frame::new(header, Body::ControllerCall(ControllerCall { api, api_version: 0, body }));
        self.push(to, Item::Frame(frame));
        let answer = engine::rt::until(&self.rt, self.rt.now() + timeout, rx).await;
        self.calls.borrow_mut().remove(&id);
        match answer {
            Some(Ok(answer)) => Ok(answer),
            Some(Err(_)) => Err(format!("node {to} cannot be reached")),
            None => Err(format!("node {to} did not answer within {} ms", timeout.as_millis())),
        }
    }

    /// Answers a call that `from` made (to the shard that made it).
    pub fn answer(self: &Rc<Self>, from: NodeId, call: &FrameHeader, error: ErrorCode, answer: ControllerCallResponse) {
        let header = FrameHeader::response_to(call, error, self.me);
        self.push(from, Item::Frame(Frame::new(header, Body::ControllerCallResponse(answer))));
    }

    /// Answers a registration `from` made, at the address it gave (the
    /// caller may be no member, or not the member its id names).
    pub fn answer_at(
        self: &Rc<Self>,
        addr: SocketAddr,
        from: NodeId,
        call: &FrameHeader,
        error: ErrorCode,
        answer: ControllerCallResponse,
    ) {
        let header = FrameHeader::response_to(call, error, self.me);
        let item = Item::Frame(Frame::new(header, Body::ControllerCallResponse(answer)));
        let mut tx = {
            let mut strangers = self.strangers.borrow_mut();
            match strangers.get(&addr) {
                Some(tx) if !tx.is_closed() => tx.clone(),
                _ => {
                    if strangers.len() >= STRANGERS_MAX {
                        strangers.pop_first();
                    }
                    let tx = self.open_link(from, addr, FRAME_ENTRIES_MAX);
                    strangers.insert(addr, tx.clone());
                    tx
                }
            }
        };
        if tx.try_send(item).is_err() {
            tracing::debug!(%addr, "the link to a registering broker is full: an answer is dropped");
        }
    }

    /// The calls among `items` that never left: their callers hear now.
    fn fail_calls(&self, items: &[Item]) {
        for item in items {
            if let Item::Frame(f) = item
                && !f.header.response
            {
                // Dropping the sender ends the caller's wait.
                self.calls.borrow_mut().remove(&f.header.request_id);
            }
        }
    }

    /// An answer to one of this shard's calls arrived from `from`.
    pub fn answered(&self, from: NodeId, header: &FrameHeader, answer: ControllerCallResponse) {
        let mut calls = self.calls.borrow_mut();
        let asked = calls.get(&header.request_id).map(|(to, _)| *to);
        if asked.is_some_and(|to| to == from || to == CONTACT)
            && let Some((_, tx)) = calls.remove(&header.request_id)
        {
            let _ = tx.send((header.error, answer));
        } else if asked.is_some() {
            tracing::warn!(node = from.0, asked = ?asked, "an answer from a node the call did not go to: ignored");
        }
    }

    fn handshake(&self) -> Handshake {
        Handshake {
            cluster_id: [0; protocol::replica::CLUSTER_ID_BYTES],
            node_id: self.me,
            broker_incarnation: 0,
            dialed_node: None,
            shards: 0,
            replication_shard_ports: Vec::new(),
            client_listen: self.client_listen.clone(),
            client_shard_ports: Vec::new(),
            software: concat!("cairn-server ", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Coalesces what is queued for one peer into frames: one per message kind,
/// in the order the kinds first appear (entries of one partition keep their
/// order within a kind).
fn frames(me: NodeId, shard: u16, items: Vec<Item>) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut fetch = Vec::new();
    let mut fetch_answers = Vec::new();
    let mut votes = Vec::new();
    let mut vote_answers = Vec::new();
    let mut pre_votes = Vec::new();
    let mut pre_vote_answers = Vec::new();
    let mut begin = Vec::new();
    let mut start = Vec::new();
    for item in items {
        match item {
            Item::Frame(f) => out.push(f),
            Item::Message(tp, m) => {
                let tp = wire_tp(tp);
                match m {
                    PeerMessage::Fetch(r) => fetch.push((tp, r)),
                    PeerMessage::FetchAnswer(a) => fetch_answers.push((tp, a)),
                    PeerMessage::Vote(r) => votes.push((tp, r)),
                    PeerMessage::VoteAnswer(a) => vote_answers.push((tp, a)),
                    PeerMessage::PreVote(r) => pre_votes.push((tp, r)),
                    PeerMessage::PreVoteAnswer(a) => pre_vote_answers.push((tp, a)),
                    PeerMessage::BeginEpoch { epoch } => begin.push((tp, epoch)),
                    PeerMessage::StartElection { epoch } => start.push((tp, epoch)),
                }
            }
        }
    }
    let one_way = |kind: Kind, response: bool| {
        let mut h = FrameHeader::request(kind, 0, me, shard, 0);
        h.response = response;
        h
    };
    for chunk in fetch.chunks(FRAME_ENTRIES_MAX) {
        let body = Body::Fetch(FetchFrame { max_wait_ms: 0, entries: chunk.to_vec() });
        out.push(Frame::new(one_way(Kind::Fetch, false), body));
    }
    // Answers carry batches: a frame is closed well before the receiver's
    // byte limit (each answer's batches are bounded by the fetch's
    // `max_bytes`, which the leader caps).
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    for (tp, answer) in fetch_answers {
        let size = 128 + answer.batches.iter().map(|b| b.bytes.len()).sum::<usize>();
        if !entries.is_empty() && (bytes + size > FRAME_DATA_BYTES_MAX || entries.len() >= FRAME_ENTRIES_MAX) {
            let body = Body::FetchResponse(FetchResponseFrame { entries: std::mem::take(&mut entries) });
            out.push(Frame::new(one_way(Kind::Fetch, true), body));
            bytes = 0;
        }
        bytes += size;
        entries.push((tp, answer));
    }
    if !entries.is_empty() {
        out.push(Frame::new(one_way(Kind::Fetch, true), Body::FetchResponse(FetchResponseFrame { entries })));
    }
    for (list, kind, response) in [(&votes, Kind::Vote, false), (&pre_votes, Kind::PreVote, false)] {
        for chunk in list.chunks(FRAME_ENTRIES_MAX) {
            let frame = VoteFrame { entries: chunk.to_vec() };
            let body = if kind == Kind::Vote { Body::Vote(frame) } else { Body::PreVote(frame) };
            out.push(Frame::new(one_way(kind, response), body));
        }
    }
    for (list, kind) in [(&vote_answers, Kind::Vote), (&pre_vote_answers, Kind::PreVote)] {
        for chunk in list.chunks(FRAME_ENTRIES_MAX) {
            let frame = VoteResponseFrame { entries: chunk.to_vec() };
            let body = if kind == Kind::Vote { Body::VoteResponse(frame) } else { Body::PreVoteResponse(frame) };
            out.push(Frame::new(one_way(kind, true), body));
        }
    }
    for (list, kind) in [(&begin, Kind::BeginEpoch), (&start, Kind::StartElection)] {
        for chunk in list.chunks(FRAME_ENTRIES_MAX) {
            let frame = EpochFrame { entries: chunk.to_vec() };
            let body = if kind == Kind::BeginEpoch { Body::BeginEpoch(frame) } else { Body::StartElection(frame) };
            out.push(Frame::new(one_way(kind, false), body));
        }
    }
    out
}

/// The writer of one peer's outbox: connects (again, with backoff, when
/// the link fails) and writes what is queued, coalesced.
async fn writer<R: Runtime>(net: Rc<Net<R>>, to: NodeId, addr: SocketAddr, mut rx: mpsc::Receiver<Item>) {
    let mut conn: Option<R::Stream> = None;
    let mut backoff = RECONNECT_MIN;
    while let Some(first) = rx.next().await {
        let mut items = vec![first];
        while items.len() < OUTBOX_MESSAGES_MAX {
            match rx.try_recv() {
                Ok(item) => items.push(item),
                Err(_) => break,
            }
        }
        if conn.is_none() {
            // Bounded: a peer behind a partition that drops packets must
            // not hold the link for the kernel's minutes of SYN retries.
            let connected = engine::rt::until(&net.rt, net.rt.now() + CONNECT_TIMEOUT, net.rt.connect(addr))
                .await
                .unwrap_or_else(|| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")));
            match connected {
                Ok(mut stream) => {
                    let _ = stream.set_nodelay(true);
                    let header = FrameHeader::request(Kind::Handshake, 0, net.me, net.shard, 0);
                    let hello = Frame::new(header, Body::Handshake(net.handshake())).encode_to_bytes();
                    if stream.write_all(&hello).await.is_ok() {
                        tracing::debug!(node = to.0, %addr, "replication link up");
                        conn = Some(stream);
                        backoff = RECONNECT_MIN;
                    }
                }
                Err(e) => {
                    tracing::debug!(node = to.0, %addr, error = %e, "cannot reach a peer");
                }
            }
            if conn.is_none() {
                // What was queued is lost; Raft sends again what matters,
                // and a call learns at once.
                net.fail_calls(&items);
                net.rt.sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        }
        let stream = conn.as_mut().expect("connected above");
        let mut failed = false;
        let calls: Vec<u32> = items
            .iter()
            .filter_map(|i| match i {
                Item::Frame(f) if !f.header.response => Some(f.header.request_id),
                _ => None,
            })
            .collect();
        for frame in frames(net.me, net.shard, items) {
            for piece in frame.encode() {
                if stream.write_all(&piece).await.is_err() {
                    failed = true;
                    break;
                }
            }
            if failed {
                break;
            }
        }
        if !failed && stream.flush().await.is_err() {
            failed = true;
        }
        if failed {
            tracing::debug!(node = to.0, "replication link lost");
            for id in calls {
                net.calls.borrow_mut().remove(&id);
            }
            conn = None;
        }
    }
}

/// Reads one connection a peer opened: its handshake, then frames, each
/// entry handed to `deliver` (of a node `known` does not name, only its
/// calls: the broker answers a stranger's registration, nothing else). Ends at the first framing error or when the
/// peer closes; messages are one-way, so nothing is answered here.
pub async fn serve<R: Runtime>(
    mut stream: R::Stream,
    peer_addr: SocketAddr,
    known: impl Fn(NodeId) -> bool,
    deliver: impl Fn(Inbound),
) {
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut peer: Option<NodeId> = None;
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let frame = loop {
            match protocol::replica::frame::split(&buf, FRAME_BYTES_MAX) {
                Ok(Split::Frame(n)) => break buf.split_to(n).freeze(),
                Ok(Split::Need(_)) => {}
                Err(e) => {
                    tracing::warn!(error = ?e, "replication framing lost: closing the connection");
                    return;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let frame = match Frame::decode(&frame, FRAME_BYTES_MAX) {
            Ok(f) => f,
            Err(e) if e.closes_connection() => {
                tracing::warn!(error = ?e, "a bad replication frame: closing the connection");
                return;
            }
            Err(e) => {
                tracing::debug!(error = ?e, "a replication frame dropped");
                continue;
            }
        };
        let from = frame.header.source_node;
        match (peer, frame.body) {
            (None, Body::Handshake(h)) if h.node_id == from && from != CONTACT => peer = Some(from),
            (None, _) => {
                tracing::warn!(node = from.0, "a replication connection without a valid handshake: closed");
                return;
            }
            (Some(p), _) if p != from => {
                tracing::warn!(
                    node = from.0,
                    handshake = p.0,
                    "a frame from another node than the handshake's: closed"
                );
                return;
            }
            (Some(_), body @ (Body::ControllerCall(_) | Body::ControllerCallResponse(_))) => {
                dispatch(from, peer_addr, frame.header, body, &deliver);
            }
            // A node not (or no longer) in the cluster may only call: a
            // broker joining registers through any member (ADR 29).
            (Some(_), _) if !known(from) => {
                tracing::debug!(node = from.0, "a replication frame from a node not in the cluster: ignored");
            }
            (Some(_), body) => dispatch(from, peer_addr, frame.header, body, &deliver),
        }
    }
}

fn dispatch(from: NodeId, peer: SocketAddr, header: FrameHeader, body: Body, deliver: &impl Fn(Inbound)) {
    let message = |tp: protocol::types::TopicPartition, message: PeerMessage| Inbound::Message {
        from,
        tp: local_tp(tp),
        message,
    };
    match body {
        Body::Fetch(f) => f.entries.into_iter().for_each(|(tp, r)| deliver(message(tp, PeerMessage::Fetch(r)))),
        Body::FetchResponse(f) => {
            f.entries.into_iter().for_each(|(tp, a)| deliver(message(tp, PeerMessage::FetchAnswer(a))));
        }
        Body::Vote(f) => f.entries.into_iter().for_each(|(tp, r)| deliver(message(tp, PeerMessage::Vote(r)))),
        Body::VoteResponse(f) => {
            f.entries.into_iter().for_each(|(tp, a)| deliver(message(tp, PeerMessage::VoteAnswer(a))));
        }
        Body::PreVote(f) => f.entries.into_iter().for_each(|(tp, r)| deliver(message(tp, PeerMessage::PreVote(r)))),
        Body::PreVoteResponse(f) => {
            f.entries.into_iter().for_each(|(tp, a)| deliver(message(tp, PeerMessage::PreVoteAnswer(a))));
        }
        Body::BeginEpoch(f) => {
            f.entries.into_iter().for_each(|(tp, epoch)| deliver(message(tp, PeerMessage::BeginEpoch { epoch })));
        }
        Body::StartElection(f) => {
            f.entries.into_iter().for_each(|(tp, epoch)| deliver(message(tp, PeerMessage::StartElection { epoch })));
        }
        Body::ControllerCall(call) => deliver(Inbound::Call { from, header, call, peer }),
        Body::ControllerCallResponse(answer) => deliver(Inbound::Answer { from, header, answer }),
        Body::Handshake(_) | Body::HandshakeResponse(_) | Body::FetchSnapshot(_) | Body::FetchSnapshotResponse(_) => {
            tracing::debug!(node = from.0, kind = header.kind.name(), "an unexpected replication frame: ignored");
        }
    }
}

#[cfg(test)]
mod tests {
    use engine::rt::sim::{SimExecutor, SimRuntime};

    use super::*;

    #[test]
    fn an_answer_is_taken_only_from_the_node_the_call_went_to() {
        let executor = SimExecutor::new(7);
        let rt = SimRuntime::new(&executor);
        let peer: SocketAddr = "10.0.0.2:8070".parse().unwrap();
        let _listener = rt.listen(peer).unwrap();
        let net = Net::new(rt, NodeId(1), 0, BTreeMap::from([(NodeId(2), peer)]), String::new());
        let result = Rc::new(RefCell::new(None));
        {
            let (net, result) = (net.clone(), result.clone());
            drop(executor.spawn(async move {
                let answer = net.call(NodeId(2), 7, Bytes::new(), Duration::from_secs(5)).await;
                *result.borrow_mut() = Some(answer);
            }));
        }
        executor.run_until_stalled();
        // The first call of a shard has id 1: anyone can guess it.
        let call = FrameHeader::request(Kind::ControllerCall, 1, NodeId(1), 0, 0);
        let answer = || ControllerCallResponse { controller_id: None, body: Bytes::from_static(b"{}") };
        net.answered(NodeId(3), &FrameHeader::response_to(&call, ErrorCode::NONE, NodeId(3)), answer());
        executor.run_until_stalled();
        assert!(result.borrow().is_none(), "node 3's answer was taken for a call to node 2");
        net.answered(NodeId(2), &FrameHeader::response_to(&call, ErrorCode::NONE, NodeId(2)), answer());
        executor.run_until_stalled();
        assert!(matches!(result.borrow().as_ref(), Some(Ok(_))), "{:?}", result.borrow().as_ref().map(Result::is_ok));
    }
}
