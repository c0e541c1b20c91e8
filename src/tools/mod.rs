//! Offline tools that read the broker's files directly (no broker needed).

pub mod dump_log;
