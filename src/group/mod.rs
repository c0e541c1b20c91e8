//! Consumer groups: the classic rebalance protocol (`state`), each shard's coordinator of the
//! groups it owns (`coordinator`), and the `__consumer_offsets` records that persist committed
//! offsets and group metadata in Kafka's layouts (`records`, with Kafka's rule for which
//! partition holds a group).

pub mod coordinator;
pub mod records;
pub mod state;
