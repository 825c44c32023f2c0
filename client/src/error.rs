//! What can go wrong talking to a broker. Broker errors keep their stable
//! code, so callers can match on `ErrorCode` constants.

use protocol::ErrorCode;
use thiserror::Error;

#[derive(Debug, Error, Clone)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connection to the broker lost: {0}")]
    ConnectionLost(String),
    #[error("{message} ({}, code {})", code.name(), code.0)]
    Broker { code: ErrorCode, message: String },
    #[error("the broker sent a response this client cannot read: {0}")]
    Protocol(String),
    #[error("timed out after {0} ms")]
    Timeout(u64),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("the producer is closed")]
    Closed,
}

impl ClientError {
    pub fn broker(code: ErrorCode, message: impl Into<String>) -> ClientError {
        ClientError::Broker { code, message: message.into() }
    }

    /// The broker's code, if the broker refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether sending the same request again may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::ConnectionLost(_) | ClientError::Timeout(_) => true,
            ClientError::Broker { code, .. } => code.is_retriable(),
            ClientError::Protocol(_) | ClientError::InvalidArgument(_) | ClientError::Closed => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;
