//! `ControllerCall` (0x07 / 0x87): a call to the controller leader, its body
//! opaque here (docs/replication.md §6 lists the `api`s).
//!
//! ```text
//! request:  api u16, api_version u16, body bytes
//! response: controller_id u32, body bytes
//! ```

use bytes::Bytes;

use super::error::BodyError;
use super::wire::{put_opt_node, read_opt_node};
use crate::codec::{Reader, Writer};
use crate::types::NodeId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerCall {
    pub api: u16,
    pub api_version: u16,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerCallResponse {
    /// The controller leader the responder knows (with `NOT_CONTROLLER`:
    /// where to call instead); `None` (0 on the wire): unknown.
    pub controller_id: Option<NodeId>,
    pub body: Bytes,
}

impl ControllerCall {
    pub fn encode(&self, w: &mut Writer) {
        w.u16(self.api);
        w.u16(self.api_version);
        w.bytes(&self.body);
    }

    pub fn decode(r: &mut Reader) -> Result<ControllerCall, BodyError> {
        Ok(ControllerCall { api: r.u16()?, api_version: r.u16()?, body: r.bytes()? })
    }
}

impl ControllerCallResponse {
    pub fn encode(&self, w: &mut Writer) {
        put_opt_node(w, self.controller_id);
        w.bytes(&self.body);
    }

    pub fn decode(r: &mut Reader) -> Result<ControllerCallResponse, BodyError> {
        Ok(ControllerCallResponse { controller_id: read_opt_node(r)?, body: r.bytes()? })
    }
}
