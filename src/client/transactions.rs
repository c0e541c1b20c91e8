//! `shardlog transactions list | describe ID` and `shardlog producers TOPIC`, as Kafka's
//! kafka-transactions tool shows them (tab-separated, a header line first).

use clap::Subcommand;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::*;

use super::cli::{check, partitions_of, s, Conn};
use super::Client;

#[derive(Subcommand)]
pub enum TransactionsAction {
    /// Every transaction the broker coordinates.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// One transactional id's state, producer and partitions.
    Describe {
        #[command(flatten)]
        conn: Conn,
        transactional_id: String,
    },
}

pub fn run(action: TransactionsAction) -> anyhow::Result<()> {
    match action {
        TransactionsAction::List { conn } => {
            let mut client = Client::connect(&conn.bootstrap)?;
            let resp = client.send(&ListTransactionsRequest::default(), 1)?;
            check(resp.error_code, "ListTransactions", None)?;
            println!("TransactionalId\tProducerId\tTransactionState");
            for t in resp.transaction_states {
                println!(
                    "{}\t{}\t{}",
                    t.transactional_id.0.as_str(),
                    t.producer_id.0,
                    t.transaction_state.as_str()
                );
            }
            Ok(())
        }
        TransactionsAction::Describe {
            conn,
            transactional_id,
        } => {
            let mut client = Client::connect(&conn.bootstrap)?;
            let mut req = DescribeTransactionsRequest::default();
            req.transactional_ids = vec![TransactionalId(s(&transactional_id))];
            let resp = client.send(&req, 0)?;
            let t = resp
                .transaction_states
                .into_iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("empty DescribeTransactions answer"))?;
            if t.error_code == 105 {
                anyhow::bail!("transactional id {transactional_id} not found");
            }
            check(t.error_code, &transactional_id, None)?;
            let now = crate::storage::now_ms();
            let (start, duration) = if t.transaction_start_time_ms >= 0 {
                (
                    t.transaction_start_time_ms.to_string(),
                    (now - t.transaction_start_time_ms).to_string(),
                )
            } else {
                ("None".to_string(), "None".to_string())
            };
            let partitions: Vec<String> = t
                .topics
                .iter()
                .flat_map(|d| {
                    d.partitions
                        .iter()
                        .map(move |p| format!("{}-{p}", d.topic.0))
                })
                .collect();
            println!(
                "TransactionalId\tProducerId\tProducerEpoch\tTransactionState\t\
                 TransactionTimeoutMs\tCurrentTransactionStartTimeMs\tTransactionDurationMs\t\
                 TopicPartitions"
            );
            println!(
                "{transactional_id}\t{}\t{}\t{}\t{}\t{start}\t{duration}\t{}",
                t.producer_id.0,
                t.producer_epoch,
                t.transaction_state.as_str(),
                t.transaction_timeout_ms,
                partitions.join(",")
            );
            Ok(())
        }
    }
}

pub fn producers(conn: &Conn, topic: &str, partition: Option<i32>) -> anyhow::Result<()> {
    let mut client = Client::connect(&conn.bootstrap)?;
    let parts = match partition {
        Some(p) => vec![p],
        None => partitions_of(&mut client, topic)?,
    };
    let mut t = TopicRequest::default();
    t.name = TopicName(s(topic));
    t.partition_indexes = parts;
    let mut req = DescribeProducersRequest::default();
    req.topics = vec![t];
    let resp = client.send(&req, 0)?;
    println!(
        "Partition\tProducerId\tProducerEpoch\tLatestCoordinatorEpoch\tLastSequence\t\
         LastTimestamp\tCurrentTransactionStartOffset"
    );
    for t in resp.topics {
        for p in t.partitions {
            check(
                p.error_code,
                &format!("{topic}-{}", p.partition_index),
                p.error_message.as_ref(),
            )?;
            for a in p.active_producers {
                let start = if a.current_txn_start_offset >= 0 {
                    a.current_txn_start_offset.to_string()
                } else {
                    "None".to_string()
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{start}",
                    p.partition_index,
                    a.producer_id.0,
                    a.producer_epoch,
                    a.coordinator_epoch,
                    a.last_sequence,
                    a.last_timestamp
                );
            }
        }
    }
    Ok(())
}
