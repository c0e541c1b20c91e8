//! The Kafka wire protocol at the broker: the table of supported APIs and versions (which is
//! exactly what ApiVersions advertises), request decoding, dispatch to the one handler per API
//! in `crate::handlers`, and response framing.
//!
//! A request the table does not cover, or that does not decode, closes its connection with a
//! log line, as Kafka does; the one exception is a too-new ApiVersions request, answered in the
//! v0 format with UNSUPPORTED_VERSION so the client can retry lower. Decoding never panics the
//! shard: it runs under `catch_unwind`.

pub mod error;
pub mod fetch_frame;

use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::handlers;
use crate::shard::Shard;

/// What the connection does with a request's result.
pub enum Outcome {
    Respond(Bytes),
    /// A frame in parts (Fetch: records are not copied into it).
    RespondParts(Vec<fetch_frame::Part>),
    /// Produce with acks=0.
    NoResponse,
    Close(String),
}

/// Supported APIs with the version range shardlog implements (intersected with the codec's).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 5),
    (ApiKey::TxnOffsetCommit, 0, 5),
    (ApiKey::WriteTxnMarkers, 0, 1),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
];

/// The version range served for an API key, if any.
pub fn version_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(k, min, max)| {
            let codec = k.valid_versions();
            (min.max(codec.min), max.min(codec.max))
        })
}

pub(crate) fn frame(
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    body: &ResponseKind,
) -> Result<Bytes, String> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut buf, key.response_header_version(version))
        .map_err(|e| format!("encoding response header: {e}"))?;
    body.encode(&mut buf, version)
        .map_err(|e| format!("encoding {key:?} v{version} response: {e}"))?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

fn decode(
    key: ApiKey,
    version: i16,
    mut body: Bytes,
) -> Result<(RequestHeader, RequestKind), String> {
    std::panic::catch_unwind(move || {
        let header = RequestHeader::decode(&mut body, key.request_header_version(version))
            .map_err(|e| format!("malformed {key:?} v{version} request header: {e}"))?;
        let request = RequestKind::decode(key, &mut body, version)
            .map_err(|e| format!("malformed {key:?} v{version} request: {e}"))?;
        Ok((header, request))
    })
    .unwrap_or_else(|_| Err(format!("malformed {key:?} v{version} request")))
}

/// Handles one request frame (without its size prefix).
/// `turn` is the request's place in its connection's Produce order (Produce only).
pub async fn handle(
    shard: &Rc<Shard>,
    body: Bytes,
    peer: &str,
    turn: Option<crate::server::order::Turn>,
) -> Outcome {
    if body.len() < 8 {
        return Outcome::Close(format!(
            "request of {} bytes is too short for a header",
            body.len()
        ));
    }
    let raw_key = i16::from_be_bytes([body[0], body[1]]);
    let version = i16::from_be_bytes([body[2], body[3]]);
    let correlation_id = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
    let Ok(key) = ApiKey::try_from(raw_key) else {
        return Outcome::Close(format!("unknown API key {raw_key}"));
    };
    let Some((min, max)) = version_range(key) else {
        return Outcome::Close(format!("unsupported API {key:?}"));
    };
    if version < min || version > max {
        if key == ApiKey::ApiVersions {
            let response = handlers::api_versions::unsupported_version();
            return respond(correlation_id, key, 0, response);
        }
        return Outcome::Close(format!(
            "unsupported {key:?} version {version} (supported {min}-{max})"
        ));
    }
    let (header, request) = match decode(key, version, body) {
        Ok(decoded) => decoded,
        Err(why) => return Outcome::Close(why),
    };
    let response = match request {
        RequestKind::ApiVersions(r) => {
            ResponseKind::ApiVersions(handlers::api_versions::handle(version, r))
        }
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(handlers::metadata::handle(shard, version, r).await)
        }
        RequestKind::Produce(r) => match handlers::produce::handle(shard, version, r, turn).await {
            Ok(Some(resp)) => ResponseKind::Produce(resp),
            Ok(None) => return Outcome::NoResponse,
            Err(why) => return Outcome::Close(why),
        },
        RequestKind::Fetch(r) => {
            let (response, files) = handlers::fetch::handle(shard, version, r).await;
            return Outcome::RespondParts(fetch_frame::frame(
                correlation_id,
                version,
                &response,
                &files,
            ));
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(handlers::list_offsets::handle(shard, version, r).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => ResponseKind::OffsetForLeaderEpoch(
            handlers::offset_for_leader_epoch::handle(shard, version, r).await,
        ),
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(handlers::create_topics::handle(shard, version, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(handlers::delete_topics::handle(shard, version, r).await)
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(handlers::delete_records::handle(shard, version, r).await)
        }
        RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(
            handlers::describe_configs::handle(shard, version, r).await,
        ),
        RequestKind::CreatePartitions(r) => ResponseKind::CreatePartitions(
            handlers::create_partitions::handle(shard, version, r).await,
        ),
        RequestKind::FindCoordinator(r) => ResponseKind::FindCoordinator(
            handlers::find_coordinator::handle(shard, version, r).await,
        ),
        RequestKind::DescribeCluster(r) => ResponseKind::DescribeCluster(
            handlers::describe_cluster::handle(shard, version, r).await,
        ),
        RequestKind::DescribeTopicPartitions(r) => ResponseKind::DescribeTopicPartitions(
            handlers::describe_topic_partitions::handle(shard, version, r).await,
        ),
        RequestKind::JoinGroup(r) => {
            let client_id = header.client_id.as_deref().unwrap_or("");
            let host = format!("/{}", peer.rsplit_once(':').map_or(peer, |(h, _)| h));
            ResponseKind::JoinGroup(
                handlers::join_group::handle(shard, version, r, client_id, &host).await,
            )
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(handlers::sync_group::handle(shard, version, r).await)
        }
        RequestKind::Heartbeat(r) => {
            ResponseKind::Heartbeat(handlers::heartbeat::handle(shard, version, r).await)
        }
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(handlers::leave_group::handle(shard, version, r).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(handlers::offset_commit::handle(shard, version, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(handlers::offset_fetch::handle(shard, version, r).await)
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(handlers::list_groups::handle(shard, version, r).await)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(handlers::describe_groups::handle(shard, version, r).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(handlers::delete_groups::handle(shard, version, r).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(handlers::offset_delete::handle(shard, version, r).await)
        }
        RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(
            handlers::init_producer_id::handle(shard, version, r).await,
        ),
        RequestKind::AddPartitionsToTxn(r) => ResponseKind::AddPartitionsToTxn(
            handlers::add_partitions_to_txn::handle(shard, version, r).await,
        ),
        RequestKind::AddOffsetsToTxn(r) => ResponseKind::AddOffsetsToTxn(
            handlers::add_offsets_to_txn::handle(shard, version, r).await,
        ),
        RequestKind::EndTxn(r) => {
            ResponseKind::EndTxn(handlers::end_txn::handle(shard, version, r).await)
        }
        RequestKind::TxnOffsetCommit(r) => ResponseKind::TxnOffsetCommit(
            handlers::txn_offset_commit::handle(shard, version, r).await,
        ),
        RequestKind::WriteTxnMarkers(r) => ResponseKind::WriteTxnMarkers(
            handlers::write_txn_markers::handle(shard, version, r).await,
        ),
        RequestKind::DescribeProducers(r) => ResponseKind::DescribeProducers(
            handlers::describe_producers::handle(shard, version, r).await,
        ),
        RequestKind::DescribeTransactions(r) => ResponseKind::DescribeTransactions(
            handlers::describe_transactions::handle(shard, version, r).await,
        ),
        RequestKind::ListTransactions(r) => ResponseKind::ListTransactions(
            handlers::list_transactions::handle(shard, version, r).await,
        ),
        _ => return Outcome::Close(format!("unsupported API {key:?}")),
    };
    respond(correlation_id, key, version, response)
}

fn respond(correlation_id: i32, key: ApiKey, version: i16, response: ResponseKind) -> Outcome {
    match frame(correlation_id, key, version, &response) {
        Ok(bytes) => Outcome::Respond(bytes),
        Err(why) => Outcome::Close(why),
    }
}

/// Helpers shared by handlers for building strings the codec wants.
pub fn str_bytes(s: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.to_string())
}

pub fn topic_name(s: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(str_bytes(s))
}
