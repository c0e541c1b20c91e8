//! The `shardlog` command: `broker` runs the broker; `topic`, `produce`, `consume`, `group`,
//! `transactions` and `producers` talk to a running broker through the project's own client;
//! `dump-log` reads a partition's files.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOC: shardlog::alloc::GuardedAlloc = shardlog::alloc::GuardedAlloc;

#[derive(Parser)]
#[command(
    name = "shardlog",
    version,
    about = "A Kafka-compatible broker, thread-per-core on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (defaults: 127.0.0.1:9092, data under ./data).
    Broker {
        /// A server.properties-style file with Kafka's key names.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override one key, e.g. --set log.retention.ms=60000 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Shards (one pinned executor per core); default: every core the process may use.
        #[arg(long)]
        cores: Option<usize>,
    },
    /// Load generator: produce or consume and report throughput and latency.
    Perf {
        #[command(subcommand)]
        command: shardlog::perf::cli::PerfCommand,
    },
    /// Sweep batch.size x linger.ms against a broker: CSV, SVG plot, a recommendation.
    Tune(shardlog::perf::tune::TuneArgs),
    /// Print segment, index, transaction index and producer snapshot files (kafka-dump-log).
    DumpLog(shardlog::tools::dump_log::DumpLogArgs),
    #[command(flatten)]
    Client(shardlog::client::cli::ClientCommand),
}

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Broker { .. }) {
        // A command whose output goes to a closed pipe (`| head`) ends quietly, as other
        // command-line tools do, instead of failing on the write.
        // SAFETY: restoring the default disposition of a signal before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let (writer, _guard) = tracing_appender::non_blocking(std::io::stderr());
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHARDLOG_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Command::Broker { config, set, cores } => {
            let cores = cores.unwrap_or_else(shardlog::server::default_cores);
            if cores == 0 {
                Err(anyhow::anyhow!("--cores must be at least 1"))
            } else {
                shardlog::config::BrokerConfig::load(config.as_deref(), &set)
                    .and_then(|c| shardlog::server::run(c, cores))
            }
        }
        Command::Perf { command } => shardlog::perf::cli::run(command),
        Command::Tune(args) => shardlog::perf::tune::run(args),
        Command::DumpLog(args) => shardlog::tools::dump_log::run(args),
        Command::Client(cmd) => shardlog::client::cli::run(cmd),
    };
    if let Err(e) = result {
        drop(_guard);
        eprintln!("shardlog: {e:#}");
        std::process::exit(1);
    }
}
