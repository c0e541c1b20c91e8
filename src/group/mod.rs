//! Consumer groups: the classic rebalance protocol (`state`), driven by the group coordinator
//! on the shard that owns the group's `__consumer_offsets` partition.

pub mod state;
