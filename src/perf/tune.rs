//! `shardlog tune`: sweeps the producer's `batch.size` × `linger.ms` (optionally ×
//! `compression.type`) against a running broker, once at a fixed offered rate and once as fast
//! as possible per setting, then writes `tune.csv` and `tune.svg` (throughput against p99,
//! Pareto frontier marked) and recommends the fastest setting within a p99 latency budget.

use std::path::PathBuf;

use clap::Args;

use super::cli::{ensure_topic, produce_config, produce_with, producer_props, Target};
use super::stats::Stats;
use super::tune_report::{self, TunePoint};

#[derive(Args)]
pub struct TuneArgs {
    #[command(flatten)]
    target: Target,
    /// batch.size values to try.
    #[arg(long = "batch-sizes", value_delimiter = ',', default_values_t = [16384usize, 65536, 262144, 1048576])]
    batch_sizes: Vec<usize>,
    /// linger.ms values to try.
    #[arg(long = "linger-ms", value_delimiter = ',', default_values_t = [0u64, 1, 5, 20])]
    linger_ms: Vec<u64>,
    /// compression.type values to try.
    #[arg(long, value_delimiter = ',', default_values_t = ["none".to_string()])]
    compression: Vec<String>,
    #[arg(long = "record-size", default_value_t = 1024)]
    record_size: usize,
    /// The fixed offered rate, records per second (open loop); 0 skips the fixed-rate runs.
    #[arg(long, default_value_t = 100_000.0)]
    rate: f64,
    /// Length of each fixed-rate run.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Records in each maximum-rate run; 0 skips the maximum-rate runs.
    #[arg(long = "max-records", default_value_t = 300_000)]
    max_records: u64,
    /// The p99 latency budget the recommendation must meet, in milliseconds.
    #[arg(long = "latency-budget-ms", default_value_t = 1.0)]
    latency_budget_ms: f64,
    /// Further producer settings held fixed over the sweep (acks, max.in.flight...).
    #[arg(long = "producer-props", num_args = 1.., value_name = "KEY=VALUE", default_values_t = ["acks=1".to_string()])]
    producer_props: Vec<String>,
    /// Directory for tune.csv and tune.svg.
    #[arg(long, default_value = "tune-out")]
    out: PathBuf,
}

fn point(props: &[String], mode: &str, offered: Option<f64>, s: &Stats) -> TunePoint {
    let get = |k: &str| {
        props
            .iter()
            .rev()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or_default()
            .to_string()
    };
    let ms = |q: f64| s.latency_us.value_at_quantile(q) as f64 / 1000.0;
    TunePoint {
        batch_size: get("batch.size").parse().unwrap_or_default(),
        linger_ms: get("linger.ms").parse().unwrap_or_default(),
        compression: get("compression.type"),
        mode: mode.to_string(),
        offered_msgs_per_sec: offered,
        mb_per_sec: s.mb_per_sec(),
        msgs_per_sec: s.msgs_per_sec(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: s.latency_us.max() as f64 / 1000.0,
        errors: s.errors,
    }
}

pub fn run(args: TuneArgs) -> anyhow::Result<()> {
    let t = &args.target;
    let partitions = ensure_topic(&t.bootstrap, &t.topic, t.partitions)?;
    let mut modes = Vec::new();
    if args.rate > 0.0 {
        let records = (args.rate * args.seconds).max(1.0) as u64;
        modes.push(("rate", Some(args.rate), records));
    }
    if args.max_records > 0 {
        modes.push(("max", None, args.max_records));
    }
    let mut points = Vec::new();
    for codec in &args.compression {
        for &batch in &args.batch_sizes {
            for &linger in &args.linger_ms {
                for &(mode, offered, records) in &modes {
                    let mut props = args.producer_props.clone();
                    props.extend([
                        format!("batch.size={batch}"),
                        format!("linger.ms={linger}"),
                        format!("compression.type={codec}"),
                    ]);
                    let parsed = producer_props(&props)?;
                    let cfg = produce_config(
                        t,
                        partitions,
                        args.record_size,
                        records,
                        offered.unwrap_or(-1.0),
                        &parsed,
                    );
                    let stats = produce_with(t, &cfg)?;
                    let p = point(&props, mode, offered, &stats);
                    println!(
                        "{mode:4} {:44} {:8.1} MB/s {:10.0} msg/s  p50 {:8.3} ms  p99 {:8.3} ms  p99.9 {:8.3} ms{}",
                        p.label(),
                        p.mb_per_sec,
                        p.msgs_per_sec,
                        p.p50_ms,
                        p.p99_ms,
                        p.p999_ms,
                        if p.errors > 0 { format!("  {} errors", p.errors) } else { String::new() }
                    );
                    points.push(p);
                }
            }
        }
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.out.display()))?;
    let csv = args.out.join("tune.csv");
    let svg = args.out.join("tune.svg");
    std::fs::write(&csv, tune_report::csv(&points))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", csv.display()))?;
    let title = format!(
        "shardlog tune: {} B records, {} partition(s), {}",
        args.record_size,
        partitions,
        args.producer_props.join(" ")
    );
    std::fs::write(&svg, tune_report::svg(&points, &title))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", svg.display()))?;
    println!("wrote {} and {}", csv.display(), svg.display());
    match tune_report::recommend(&points, args.latency_budget_ms) {
        Some(i) => {
            let p = &points[i];
            println!(
                "recommended for p99 <= {} ms: {} ({} mode: {:.1} MB/s, p99 {:.3} ms)",
                args.latency_budget_ms,
                p.label(),
                p.mode,
                p.mb_per_sec,
                p.p99_ms
            );
        }
        None => println!(
            "no setting met p99 <= {} ms; the lowest p99 measured is {:.3} ms",
            args.latency_budget_ms,
            points
                .iter()
                .map(|p| p.p99_ms)
                .fold(f64::INFINITY, f64::min)
        ),
    }
    Ok(())
}
