//! The cluster: the metadata records and the image they build ([`image`]), the active
//! controller's decisions over them ([`controller`]), and where replicas go ([`placement`]).
//! The controller quorum is raft-rs behind [`quorum`], its disk [`quorum_store`]. The replica
//! fetcher will live here too; the replica state of one partition (ISR, HW, epochs) is
//! [`crate::partition::replica`].

pub mod controller;
pub mod image;
pub mod placement;
pub mod quorum;
pub mod quorum_store;
