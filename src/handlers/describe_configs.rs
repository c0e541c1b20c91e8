//! DescribeConfigs for topics (every topic key: the override, or the broker's value) and for
//! this broker (every key, with where its value came from).

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use crate::config::ConfigSource;
use crate::protocol::{error, str_bytes};
use crate::shard::Shard;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const BROKER_LOGGER: i8 = 8;

/// Kafka's ConfigType guessed from a value, for keys without a declared type (broker keys):
/// BOOLEAN 1, STRING 2, LONG 5, DOUBLE 6, LIST 7.
fn config_type(value: &str) -> i8 {
    if value == "true" || value == "false" {
        1
    } else if value.parse::<i64>().is_ok() {
        5
    } else if value.parse::<f64>().is_ok() {
        6
    } else if value.contains(',') {
        7
    } else {
        2
    }
}

fn entry(
    version: i16,
    name: &str,
    value: &str,
    source: ConfigSource,
    read_only: bool,
    synonyms: bool,
) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default();
    e.name = str_bytes(name);
    e.value = Some(str_bytes(value));
    e.read_only = read_only;
    e.config_source = source as i8;
    if version >= 3 {
        e.config_type =
            crate::config::topic::topic_config_type(name).unwrap_or_else(|| config_type(value));
        e.documentation = None;
    }
    if synonyms {
        let mut s = DescribeConfigsSynonym::default();
        s.name = str_bytes(name);
        s.value = Some(str_bytes(value));
        s.source = source as i8;
        e.synonyms = vec![s];
    }
    e
}

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let meta = shard.metadata();
    let c = &shard.config;
    let mut response = DescribeConfigsResponse::default();
    for res in request.resources {
        let name = res.resource_name.as_str().to_string();
        let wanted = |k: &str| {
            // Null or empty: every key (as Kafka's ConfigHelper treats both).
            res.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.is_empty() || keys.iter().any(|x| x.as_str() == k))
        };
        let mut r = DescribeConfigsResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        match res.resource_type {
            TOPIC => match meta.topics.get(&name) {
                Some(t) => {
                    let effective = t.configs.resolve_map(&c.log_defaults).unwrap_or_default();
                    for (k, v) in effective.iter().filter(|(k, _)| wanted(k)) {
                        let source = c.topic_config_source(&t.configs, k);
                        r.configs.push(entry(
                            version,
                            k,
                            v,
                            source,
                            false,
                            request.include_synonyms,
                        ));
                    }
                }
                None => {
                    r.error_code = error::UNKNOWN_TOPIC_OR_PARTITION;
                    r.error_message = Some(str_bytes(&format!("Topic {name} does not exist")));
                }
            },
            BROKER if name.is_empty() || name == c.node_id.to_string() => {
                for (k, v, source) in c.entries().filter(|(k, _, _)| wanted(k)) {
                    r.configs
                        .push(entry(version, k, v, source, true, request.include_synonyms));
                }
            }
            BROKER | BROKER_LOGGER => {
                r.error_code = error::INVALID_REQUEST;
                r.error_message = Some(str_bytes(&format!(
                    "Unexpected broker id, expected {} but received {name}",
                    c.node_id
                )));
            }
            other => {
                r.error_code = error::INVALID_REQUEST;
                r.error_message = Some(str_bytes(&format!("Unsupported resource type {other}")));
            }
        }
        response.results.push(r);
    }
    response
}
