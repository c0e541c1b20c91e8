//! OffsetFetch: committed offsets of one group (v1–v7) or of several at once (v8+), for the
//! partitions asked or, with none named, for every partition the group committed. With
//! `require_stable` (v7+), a partition whose offset a transaction has pending answers
//! UNSTABLE_OFFSET_COMMIT (the consumer retries once the transaction ended).

use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::group::records::OffsetValue;
use crate::group::state;
use crate::protocol::{str_bytes, topic_name};
use crate::shard::Shard;

type Offset = Result<Option<OffsetValue>, i16>;
type Found = Vec<(String, i32, Offset)>;
/// Offsets grouped by topic: (topic, [(partition, offset)]).
type ByTopic = Vec<(String, Vec<(i32, Offset)>)>;

async fn fetch(
    shard: &Rc<Shard>,
    group: &str,
    partitions: Option<Vec<(String, i32)>>,
    require_stable: bool,
) -> (i16, Found) {
    let call = GroupCall::FetchOffsets {
        partitions,
        require_stable,
    };
    match shard.group_call(group, call).await {
        GroupAnswer::Offsets(code, found) => (code, found),
        _ => (state::COORDINATOR_NOT_AVAILABLE, Vec::new()),
    }
}

/// Found offsets grouped by topic, in the order first seen.
fn by_topic(found: Found) -> ByTopic {
    let mut out: ByTopic = Vec::new();
    for (t, p, v) in found {
        match out.iter_mut().find(|(name, _)| *name == t) {
            Some((_, parts)) => parts.push((p, v)),
            None => out.push((t, vec![(p, v)])),
        }
    }
    out
}

/// (topic, partition) for every partition a request names.
fn partitions_asked<'a>(
    topics: impl Iterator<Item = (&'a TopicName, &'a [i32])>,
) -> Vec<(String, i32)> {
    topics
        .flat_map(|(name, parts)| parts.iter().map(|p| (name.0.to_string(), *p)))
        .collect()
}

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let mut r = OffsetFetchResponse::default();
    if version >= 8 {
        for g in request.groups {
            let wanted = g
                .topics
                .map(|ts| partitions_asked(ts.iter().map(|t| (&t.name, &t.partition_indexes[..]))));
            let (code, found) = fetch(shard, &g.group_id.0, wanted, request.require_stable).await;
            let mut group = OffsetFetchResponseGroup::default();
            group.group_id = g.group_id;
            group.error_code = code;
            for (t, parts) in by_topic(found) {
                let mut topic = OffsetFetchResponseTopics::default();
                topic.name = topic_name(&t);
                for (p, v) in parts {
                    let mut part = OffsetFetchResponsePartitions::default();
                    part.partition_index = p;
                    if let Err(e) = v {
                        part.error_code = e;
                    }
                    let v = v.ok().flatten();
                    part.committed_offset = v.as_ref().map_or(-1, |v| v.offset);
                    part.committed_leader_epoch = v.as_ref().map_or(-1, |v| v.leader_epoch);
                    part.metadata = Some(str_bytes(v.as_ref().map_or("", |v| &v.metadata)));
                    topic.partitions.push(part);
                }
                group.topics.push(topic);
            }
            r.groups.push(group);
        }
        return r;
    }
    let wanted = request
        .topics
        .map(|ts| partitions_asked(ts.iter().map(|t| (&t.name, &t.partition_indexes[..]))));
    let require_stable = version >= 7 && request.require_stable;
    let (code, mut found) = fetch(shard, &request.group_id.0, wanted.clone(), require_stable).await;
    if code != state::NONE && found.is_empty() {
        // Each partition asked carries the error (v1 has no top-level error code).
        found = wanted
            .unwrap_or_default()
            .into_iter()
            .map(|(t, p)| (t, p, Ok(None)))
            .collect();
    }
    if version >= 2 {
        r.error_code = code;
    }
    for (t, parts) in by_topic(found) {
        let mut topic = OffsetFetchResponseTopic::default();
        topic.name = topic_name(&t);
        for (p, v) in parts {
            let mut part = OffsetFetchResponsePartition::default();
            part.partition_index = p;
            if let Err(e) = v {
                part.error_code = e;
            }
            let v = v.ok().flatten();
            part.committed_offset = v.as_ref().map_or(-1, |v| v.offset);
            if version >= 5 {
                part.committed_leader_epoch = v.as_ref().map_or(-1, |v| v.leader_epoch);
            }
            part.metadata = Some(str_bytes(v.as_ref().map_or("", |v| &v.metadata)));
            if version < 2 {
                part.error_code = code;
            }
            topic.partitions.push(part);
        }
        r.topics.push(topic);
    }
    r
}
