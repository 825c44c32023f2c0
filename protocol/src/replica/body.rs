//! A whole replication frame: the header and the body of its kind.
//!
//! A response's body is its kind's body whatever its `error` says: a
//! responder that refuses a whole request (`MALFORMED_REQUEST`, an unknown
//! sender, a peer of another cluster) still sends the body, with no entries
//! or its own handshake, and a `NOT_CONTROLLER` answer names the controller
//! it knows in `controller_id`. The one exception is the answer to a kind
//! the responder does not know, which cannot be built: its body is empty
//! (and only a build that knows the kind reads it).

use bytes::Bytes;

use super::controller::{ControllerCall, ControllerCallResponse};
use super::epoch::EpochFrame;
use super::error::BodyError;
use super::fetch::{FetchFrame, FetchResponseFrame};
use super::frame::{FRAME_HEADER_BYTES, FrameError, FrameHeader, Kind, LENGTH_BYTES};
use super::handshake::Handshake;
use super::snapshot::{FetchSnapshot, FetchSnapshotResponse};
use super::vote::{VoteFrame, VoteResponseFrame};
use crate::ErrorCode;
use crate::codec::{Reader, Writer};

/// The body of one frame, by kind and direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Handshake(Handshake),
    HandshakeResponse(Handshake),
    Fetch(FetchFrame),
    FetchResponse(FetchResponseFrame),
    Vote(VoteFrame),
    VoteResponse(VoteResponseFrame),
    PreVote(VoteFrame),
    PreVoteResponse(VoteResponseFrame),
    BeginEpoch(EpochFrame),
    StartElection(EpochFrame),
    ControllerCall(ControllerCall),
    ControllerCallResponse(ControllerCallResponse),
    FetchSnapshot(FetchSnapshot),
    FetchSnapshotResponse(FetchSnapshotResponse),
}

impl Body {
    #[must_use]
    pub fn kind(&self) -> Kind {
        match self {
            Body::Handshake(_) | Body::HandshakeResponse(_) => Kind::Handshake,
            Body::Fetch(_) | Body::FetchResponse(_) => Kind::Fetch,
            Body::Vote(_) | Body::VoteResponse(_) => Kind::Vote,
            Body::PreVote(_) | Body::PreVoteResponse(_) => Kind::PreVote,
            Body::BeginEpoch(_) => Kind::BeginEpoch,
            Body::StartElection(_) => Kind::StartElection,
            Body::ControllerCall(_) | Body::ControllerCallResponse(_) => Kind::ControllerCall,
            Body::FetchSnapshot(_) | Body::FetchSnapshotResponse(_) => Kind::FetchSnapshot,
        }
    }

    #[must_use]
    pub fn is_response(&self) -> bool {
        matches!(
            self,
            Body::HandshakeResponse(_)
                | Body::FetchResponse(_)
                | Body::VoteResponse(_)
                | Body::PreVoteResponse(_)
                | Body::ControllerCallResponse(_)
                | Body::FetchSnapshotResponse(_)
        )
    }

    /// Appends the body's bytes.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Body::Handshake(h) | Body::HandshakeResponse(h) => h.encode(w),
            Body::Fetch(f) => f.encode(w),
            Body::FetchResponse(f) => f.encode(w),
            Body::Vote(v) | Body::PreVote(v) => v.encode(w),
            Body::VoteResponse(v) | Body::PreVoteResponse(v) => v.encode(w),
            Body::BeginEpoch(e) | Body::StartElection(e) => e.encode(w),
            Body::ControllerCall(c) => c.encode(w),
            Body::ControllerCallResponse(c) => c.encode(w),
            Body::FetchSnapshot(s) => s.encode(w),
            Body::FetchSnapshotResponse(s) => s.encode(w),
        }
    }

    /// Decodes the body of a frame of `kind` (a response if `response`;
    /// a one-way kind has none, which [`FrameHeader::decode`] refuses
    /// first). The body must be consumed exactly.
    pub fn decode(kind: Kind, response: bool, body: Bytes) -> Result<Body, BodyError> {
        let mut r = Reader::new(body);
        let decoded = match (kind, response) {
            (Kind::Handshake, false) => Body::Handshake(Handshake::decode(&mut r)?),
            (Kind::Handshake, true) => Body::HandshakeResponse(Handshake::decode(&mut r)?),
            (Kind::Fetch, false) => Body::Fetch(FetchFrame::decode(&mut r)?),
            (Kind::Fetch, true) => Body::FetchResponse(FetchResponseFrame::decode(&mut r)?),
            (Kind::Vote, false) => Body::Vote(VoteFrame::decode(&mut r)?),
            (Kind::Vote, true) => Body::VoteResponse(VoteResponseFrame::decode(&mut r)?),
            (Kind::PreVote, false) => Body::PreVote(VoteFrame::decode(&mut r)?),
            (Kind::PreVote, true) => Body::PreVoteResponse(VoteResponseFrame::decode(&mut r)?),
            (Kind::BeginEpoch, _) => Body::BeginEpoch(EpochFrame::decode(&mut r)?),
            (Kind::StartElection, _) => Body::StartElection(EpochFrame::decode(&mut r)?),
            (Kind::ControllerCall, false) => Body::ControllerCall(ControllerCall::decode(&mut r)?),
            (Kind::ControllerCall, true) => Body::ControllerCallResponse(ControllerCallResponse::decode(&mut r)?),
            (Kind::FetchSnapshot, false) => Body::FetchSnapshot(FetchSnapshot::decode(&mut r)?),
            (Kind::FetchSnapshot, true) => Body::FetchSnapshotResponse(FetchSnapshotResponse::decode(&mut r)?),
        };
        r.finish()?;
        Ok(decoded)
    }
}

/// One frame: its header and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: FrameHeader,
    pub body: Body,
}

/// Why a frame was not taken: its header ([`FrameError`], which says
/// whether the connection must close) or its body.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FrameDecodeError {
    #[error("{0}")]
    Header(#[from] FrameError),
    #[error("{kind:?} body: {error}", kind = .header.kind)]
    Body { header: FrameHeader, error: BodyError },
}

impl FrameDecodeError {
    #[must_use]
    pub fn closes_connection(&self) -> bool {
        matches!(self, FrameDecodeError::Header(e) if e.closes_connection())
    }

    /// The code a refused request is answered with; `None`: close the
    /// connection instead.
    #[must_use]
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            FrameDecodeError::Header(e) => e.code(),
            FrameDecodeError::Body { error, .. } => Some(error.code()),
        }
    }
}

impl Frame {
    /// A frame of `body` under `header`, whose kind and direction must be
    /// the body's.
    #[must_use]
    pub fn new(header: FrameHeader, body: Body) -> Frame {
        assert_eq!((header.kind, header.response), (body.kind(), body.is_response()), "the header names the body");
        Frame { header, body }
    }

    /// The frame's bytes as pieces: large byte strings (a fetch answer's
    /// batches) are pieces of their own, never copied.
    #[must_use]
    pub fn encode(&self) -> Vec<Bytes> {
        assert_eq!(
            (self.header.kind, self.header.response),
            (self.body.kind(), self.body.is_response()),
            "the header names the body"
        );
        let mut w = Writer::new();
        w.raw(&self.header.encode(0));
        self.body.encode(&mut w);
        let length = w.len() - LENGTH_BYTES;
        w.patch_u32(0, u32::try_from(length).expect("frames are far below 4 GiB"));
        w.finish()
    }

    /// The frame's bytes in one buffer (small frames, tests).
    #[must_use]
    pub fn encode_to_bytes(&self) -> Bytes {
        let pieces = self.encode();
        if let [one] = pieces.as_slice() {
            return one.clone();
        }
        pieces.iter().flat_map(|p| p.iter().copied()).collect::<Vec<u8>>().into()
    }

    /// Decodes one whole frame as [`split`](super::frame::split) cut it,
    /// its length prefix included. Byte strings in the body (batches,
    /// controller call bodies) are slices of `frame`.
    pub fn decode(frame: &Bytes, frame_bytes_max: usize) -> Result<Frame, FrameDecodeError> {
        let header = FrameHeader::decode(frame, frame_bytes_max)?;
        let body = frame.slice(FRAME_HEADER_BYTES..);
        match Body::decode(header.kind, header.response, body) {
            Ok(body) => Ok(Frame { header, body }),
            Err(error) => Err(FrameDecodeError::Body { header, error }),
        }
    }
}
