//! `shardlog perf rebalance`: how long consumer groups take to settle, measured with librdkafka
//! consumers (one thread each) against a running broker. Per round, on a fresh group:
//! - `first_assignment`: a lone consumer's subscribe until it owns partitions (the broker holds
//!   a new group's first join for `group.initial.rebalance.delay.ms`);
//! - `join_all`: `--members` consumers subscribing at once until every one owns its share;
//! - `rebalance_join`: one more member joining the stable group until all of them own a
//!   disjoint share covering the topic again;
//! - `rebalance_leave`: that member closing (LeaveGroup) until the rest cover the topic again.
//!
//! Prints every round and the medians, as text or one JSON object.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

#[derive(Args, Clone)]
pub struct RebalanceArgs {
    /// Broker address.
    #[arg(
        long = "bootstrap-server",
        alias = "bootstrap",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    #[arg(long, default_value = "rebalance-bench")]
    pub topic: String,
    /// Partitions to create the topic with if it does not exist.
    #[arg(long, default_value_t = 20)]
    pub partitions: i32,
    /// Members of the group measured.
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// The consumers' heartbeat.interval.ms (librdkafka's default 3000): members learn of a
    /// rebalance from their next heartbeat.
    #[arg(long, default_value_t = 3000)]
    pub heartbeat_ms: u64,
    /// The consumers' session.timeout.ms.
    #[arg(long, default_value_t = 45000)]
    pub session_ms: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A consumer polling on its own thread, publishing what it owns.
struct Member {
    owned: Arc<Mutex<Vec<i32>>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Member {
    fn start(args: &RebalanceArgs, group: &str) -> anyhow::Result<Member> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &args.bootstrap)
            .set("group.id", group)
            .set("client.id", "shardlog-perf-rebalance")
            .set("heartbeat.interval.ms", args.heartbeat_ms.to_string())
            .set("session.timeout.ms", args.session_ms.to_string())
            .set("enable.auto.commit", "false")
            .create()?;
        consumer.subscribe(&[&args.topic])?;
        let owned = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, s) = (Arc::clone(&owned), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                consumer.poll(Duration::from_millis(5));
                let now: Vec<i32> = consumer
                    .assignment()
                    .map(|a| a.elements().iter().map(|e| e.partition()).collect())
                    .unwrap_or_default();
                if let Ok(mut mine) = o.lock() {
                    *mine = now;
                }
            }
            // Dropping the consumer closes it: LeaveGroup, as a closing client does.
        });
        Ok(Member {
            owned,
            stop,
            thread,
        })
    }

    fn owned(&self) -> Vec<i32> {
        self.owned.lock().map(|o| o.clone()).unwrap_or_default()
    }

    fn close(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Whether every member owns something and together they own each partition exactly once.
fn settled(members: &[Member], partitions: i32) -> bool {
    let mut seen = BTreeSet::new();
    for m in members {
        let owned = m.owned();
        if owned.is_empty() {
            return false;
        }
        for p in owned {
            if !seen.insert(p) {
                return false;
            }
        }
    }
    seen.len() == partitions as usize
}

/// Waits until `settled`; the time it took from `since`.
fn wait_settled(members: &[Member], partitions: i32, since: Instant) -> anyhow::Result<Duration> {
    let limit = Duration::from_secs(120);
    while !settled(members, partitions) {
        if since.elapsed() > limit {
            anyhow::bail!("the group did not settle within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(since.elapsed())
}

/// One round's four timings, in ms.
fn round(args: &RebalanceArgs, partitions: i32, n: usize) -> anyhow::Result<[f64; 4]> {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let lone_group = format!("perf-rebalance-lone-{}-{n}", std::process::id());
    let start = Instant::now();
    let lone = [Member::start(args, &lone_group)?];
    let first = wait_settled(&lone, partitions, start)?;
    lone.into_iter().for_each(Member::close);

    let group = format!("perf-rebalance-{}-{n}", std::process::id());
    let start = Instant::now();
    let mut members = (0..args.members)
        .map(|_| Member::start(args, &group))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let join_all = wait_settled(&members, partitions, start)?;

    let start = Instant::now();
    members.push(Member::start(args, &group)?);
    let rebalance_join = wait_settled(&members, partitions, start)?;

    let start = Instant::now();
    if let Some(last) = members.pop() {
        last.close();
    }
    let rebalance_leave = wait_settled(&members, partitions, start)?;
    members.into_iter().for_each(Member::close);
    Ok([
        ms(first),
        ms(join_all),
        ms(rebalance_join),
        ms(rebalance_leave),
    ])
}

pub fn run(args: RebalanceArgs) -> anyhow::Result<()> {
    let partitions = super::cli::ensure_topic(&args.bootstrap, &args.topic, args.partitions)?;
    let partitions = i32::try_from(partitions)?;
    if partitions < args.members as i32 + 1 {
        anyhow::bail!(
            "{} partitions cannot give each of {} members one",
            partitions,
            args.members + 1
        );
    }
    const NAMES: [&str; 4] = [
        "first_assignment",
        "join_all",
        "rebalance_join",
        "rebalance_leave",
    ];
    let mut results: Vec<[f64; 4]> = Vec::new();
    for n in 0..args.rounds {
        let r = round(&args, partitions, n)?;
        if !args.json {
            println!(
                "round {n}: first assignment {:.0} ms, {} members joining {:.0} ms, \
                 one more joining {:.0} ms, one leaving {:.0} ms",
                r[0], args.members, r[1], r[2], r[3]
            );
        }
        results.push(r);
    }
    let median = |i: usize| {
        let mut v: Vec<f64> = results.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    if args.json {
        let fields: Vec<String> = NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| format!("\"{name}_ms\":{:.1}", median(i)))
            .collect();
        println!(
            "{{\"members\":{},\"partitions\":{partitions},\"heartbeat_ms\":{},{}}}",
            args.members,
            args.heartbeat_ms,
            fields.join(",")
        );
    } else {
        println!(
            "median of {} rounds: first assignment {:.0} ms, {} members joining {:.0} ms, \
             one more joining {:.0} ms, one leaving {:.0} ms",
            args.rounds,
            median(0),
            args.members,
            median(1),
            median(2),
            median(3)
        );
    }
    Ok(())
}
