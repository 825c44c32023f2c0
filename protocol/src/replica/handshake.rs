//! Handshake (0x01 / 0x81): the first frame on a connection, and its
//! answer, the same body of the responder:
//!
//! ```text
//! cluster_id 16 bytes, node_id u32, broker_incarnation u64, dialed_node u32,
//! shards u16, [replication_shard_port u16], client_listen string,
//! [client_shard_port u16], software string
//! ```

use super::error::BodyError;
use super::wire::{put_opt_node, read_opt_node};
use crate::codec::{Reader, Writer};
use crate::types::NodeId;

/// Bytes of a cluster id.
pub const CLUSTER_ID_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// All zeros: not known yet (a broker joining with `--join`).
    pub cluster_id: [u8; CLUSTER_ID_BYTES],
    pub node_id: NodeId,
    /// The broker's `node.json` incarnation (new with every data directory).
    pub broker_incarnation: u64,
    /// The node the dialer means to reach; `None` (0 on the wire): any.
    pub dialed_node: Option<NodeId>,
    pub shards: u16,
    /// Each shard's replication port, in shard order.
    pub replication_shard_ports: Vec<u16>,
    pub client_listen: String,
    /// Each shard's client port, in shard order (empty without shard ports).
    pub client_shard_ports: Vec<u16>,
    pub software: String,
}

impl Handshake {
    /// Whether the cluster id is known (not all zeros).
    #[must_use]
    pub fn knows_cluster(&self) -> bool {
        self.cluster_id != [0; CLUSTER_ID_BYTES]
    }

    pub fn encode(&self, w: &mut Writer) {
        w.raw(&self.cluster_id);
        w.u32(self.node_id.0);
        w.u64(self.broker_incarnation);
        put_opt_node(w, self.dialed_node);
        w.u16(self.shards);
        w.array(&self.replication_shard_ports, |w, p| w.u16(*p));
        w.string(&self.client_listen);
        w.array(&self.client_shard_ports, |w, p| w.u16(*p));
        w.string(&self.software);
    }

    pub fn decode(r: &mut Reader) -> Result<Handshake, BodyError> {
        let mut cluster_id = [0u8; CLUSTER_ID_BYTES];
        for b in &mut cluster_id {
            *b = r.u8()?;
        }
        Ok(Handshake {
            cluster_id,
            node_id: NodeId(r.u32()?),
            broker_incarnation: r.u64()?,
            dialed_node: read_opt_node(r)?,
            shards: r.u16()?,
            replication_shard_ports: r.array("replication shard ports", 2, Reader::u16)?,
            client_listen: r.string()?,
            client_shard_ports: r.array("client shard ports", 2, Reader::u16)?,
            software: r.string()?,
        })
    }
}
