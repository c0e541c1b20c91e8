//! Transactions: the transaction coordinator (an I/O-free state machine in `state`, its
//! runtime in `coordinator`, its `__transaction_state` records in `records`) and the producer
//! ids it and idempotent producers are given (`producer_ids`).

pub mod coordinator;
pub mod producer_ids;
pub mod records;
pub mod state;
