//! The simulated network: listeners by address and in-memory byte streams
//! with TCP's shape (ordered, bounded, half-closable). A stream dropped on
//! one side reads as end-of-file and fails writes on the other, which is
//! what a peer that died looks like. Delay, reordering and partitions
//! between brokers belong here too, with the cluster.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Bytes one direction of a stream buffers before writes wait.
const PIPE_BYTES_MAX: usize = 256 << 10;

#[derive(Default)]
struct Pipe {
    buf: VecDeque<u8>,
    /// The writer closed its side (or went away).
    closed: bool,
    /// The reader went away: writes fail.
    reader_gone: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Pipe {
    fn wake_reader(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

/// One end of a simulated connection.
pub struct SimStream {
    inbound: Rc<RefCell<Pipe>>,
    outbound: Rc<RefCell<Pipe>>,
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

impl SimStream {
    fn pair(a: SocketAddr, b: SocketAddr) -> (SimStream, SimStream) {
        let ab = Rc::new(RefCell::new(Pipe::default()));
        let ba = Rc::new(RefCell::new(Pipe::default()));
        (
            SimStream { inbound: ba.clone(), outbound: ab.clone(), local: a, peer: b },
            SimStream { inbound: ab, outbound: ba, local: b, peer: a },
        )
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        let mut out = self.outbound.borrow_mut();
        out.closed = true;
        out.wake_reader();
        drop(out);
        let mut inb = self.inbound.borrow_mut();
        inb.reader_gone = true;
        inb.buf.clear();
        inb.wake_writer();
    }
}

impl futures::io::AsyncRead for SimStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut pipe = self.inbound.borrow_mut();
        if pipe.buf.is_empty() {
            if pipe.closed {
                return Poll::Ready(Ok(0));
            }
            pipe.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(pipe.buf.len());
        for (dst, src) in buf.iter_mut().zip(pipe.buf.drain(..n)) {
            *dst = src;
        }
        pipe.wake_writer();
        Poll::Ready(Ok(n))
    }
}

impl futures::io::AsyncWrite for SimStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut pipe = self.outbound.borrow_mut();
        if pipe.reader_gone || pipe.closed {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe)));
        }
        let room = PIPE_BYTES_MAX - pipe.buf.len();
        if room == 0 {
            pipe.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(room);
        pipe.buf.extend(&buf[..n]);
        pipe.wake_reader();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut pipe = self.outbound.borrow_mut();
        pipe.closed = true;
        pipe.wake_reader();
        Poll::Ready(Ok(()))
    }
}

impl crate::rt::Stream for SimStream {
    fn set_nodelay(&self, _nodelay: bool) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Backlog {
    pending: VecDeque<SimStream>,
    acceptors: Vec<Waker>,
    /// Every listener on the address (SO_REUSEPORT shares it).
    listeners: usize,
}

#[derive(Default)]
struct NetInner {
    backlogs: HashMap<SocketAddr, Rc<RefCell<Backlog>>>,
    next_port: u16,
}

/// The network of one simulation.
#[derive(Clone, Default)]
pub struct SimNet {
    inner: Rc<RefCell<NetInner>>,
}

/// A listener on a simulated address.
pub struct SimListener {
    addr: SocketAddr,
    backlog: Rc<RefCell<Backlog>>,
}

impl Drop for SimListener {
    fn drop(&mut self) {
        self.backlog.borrow_mut().listeners -= 1;
    }
}

impl SimNet {
    #[must_use]
    pub fn new() -> SimNet {
        SimNet::default()
    }

    /// Listens on `addr`; port 0 takes a free one. Several listeners may
    /// share an address; each connection goes to one of them.
    pub fn listen(&self, mut addr: SocketAddr) -> io::Result<SimListener> {
        let mut net = self.inner.borrow_mut();
        if addr.port() == 0 {
            loop {
                net.next_port = net.next_port.wrapping_add(1).max(20_000);
                addr.set_port(net.next_port);
                if net.backlogs.get(&addr).is_none_or(|b| b.borrow().listeners == 0) {
                    break;
                }
            }
        }
        let backlog = net.backlogs.entry(addr).or_default().clone();
        backlog.borrow_mut().listeners += 1;
        Ok(SimListener { addr, backlog })
    }

    /// Connects to a listening address; refused if nothing listens there.
    pub fn connect(&self, addr: SocketAddr) -> io::Result<SimStream> {
        let mut net = self.inner.borrow_mut();
        let backlog = net.backlogs.get(&addr).cloned().filter(|b| b.borrow().listeners > 0);
        let Some(backlog) = backlog else {
            return Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("nothing listens on {addr}")));
        };
        net.next_port = net.next_port.wrapping_add(1).max(20_000);
        let local = SocketAddr::new(addr.ip(), net.next_port);
        let (client, server) = SimStream::pair(local, addr);
        let mut b = backlog.borrow_mut();
        b.pending.push_back(server);
        for w in b.acceptors.drain(..) {
            w.wake();
        }
        Ok(client)
    }
}

/// The accept future of a [`SimListener`].
struct Accept<'a> {
    listener: &'a SimListener,
}

impl std::future::Future for Accept<'_> {
    type Output = io::Result<(SimStream, SocketAddr)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut b = self.listener.backlog.borrow_mut();
        if let Some(stream) = b.pending.pop_front() {
            let peer = stream.peer;
            return Poll::Ready(Ok((stream, peer)));
        }
        b.acceptors.push(cx.waker().clone());
        Poll::Pending
    }
}

impl crate::rt::Listener for SimListener {
    type Stream = SimStream;

    async fn accept(&self) -> io::Result<(SimStream, SocketAddr)> {
        Accept { listener: self }.await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::Listener as _;
    use crate::rt::sim::SimExecutor;
    use futures::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn bytes_flow_in_order_and_a_dropped_peer_reads_as_end_of_file() {
        let ex = SimExecutor::new(1);
        let net = SimNet::new();
        let listener = net.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = ex.spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut client = net.connect(addr).unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let sent = data.clone();
        let got = ex.block_on(async move {
            client.write_all(&sent).await.unwrap();
            drop(client);
            server.await.unwrap()
        });
        assert_eq!(got, data);
        assert!(net.connect("127.0.0.1:1".parse().unwrap()).is_err(), "nothing listens there");
    }
}
