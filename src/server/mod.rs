//! The broker process: loads config and metadata, starts one pinned executor per shard joined
//! by a channel mesh, binds the listener on every shard (SO_REUSEPORT), and on SIGINT/SIGTERM
//! stops accepting, lets in-flight requests finish, closes every log and writes the
//! clean-shutdown marker.

pub mod connection;
pub mod order;

use std::net::ToSocketAddrs;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::BrokerConfig;
use crate::metadata::{self, MetadataSnapshot};
use crate::shard::{Shard, ShardMessage};
use crate::storage::CLEAN_SHUTDOWN_FILE;

/// Flags shared with the signal-handling main thread; polled by shards, never on the data path.
struct Lifecycle {
    stop: AtomicBool,
    /// Shards that have opened their partitions: none accepts before all have.
    opened: AtomicUsize,
    connections_done: AtomicUsize,
}

/// What the main thread waits for.
enum Event {
    Ready(Result<(), String>),
    Signal(i32),
    /// A shard's thread ended, normally or by a panic.
    ShardExited(usize),
}

/// Tells the main thread when a shard's thread ends, however it ends.
struct ExitNotice {
    id: usize,
    events: std::sync::mpsc::Sender<Event>,
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.events.send(Event::ShardExited(self.id));
    }
}

/// Flags a task that runs `threshold` past its budget without yielding
/// (`shardlog.stall.detection.ms`): glommio's detector logs a warning with the task queue, the
/// overrun and a backtrace (its `log` record reaches the broker's log through tracing).
#[derive(Debug)]
struct StallThreshold {
    threshold: Duration,
}

impl glommio::StallDetectionHandler for StallThreshold {
    fn threshold(
        &self,
        _queue: glommio::TaskQueueHandle,
        _max_expected_runtime: Duration,
    ) -> Option<Duration> {
        Some(self.threshold)
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) }
            == 0;
    if !ok {
        return (0..std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1))
            .collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

pub fn default_cores() -> usize {
    allowed_cpus().len().max(1)
}

/// Binds a placeholder SO_REUSEPORT socket to learn a free port when `listeners` says port 0;
/// it never listens, so it receives no connections, and it is closed once the shards bind.
fn reserve_port(host: &str) -> anyhow::Result<(socket2::Socket, u16)> {
    let addr = (host, 0)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("listeners: cannot resolve host '{host}'"))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    let port = socket
        .local_addr()?
        .as_socket()
        .map(|a| a.port())
        .ok_or_else(|| anyhow::anyhow!("cannot read the reserved port"))?;
    Ok((socket, port))
}

/// Removes partition directories whose topic is no longer in the metadata (a crash between
/// a DeleteTopics being recorded and its directories being removed leaves them behind). Only
/// directories carrying a `partition.metadata` are considered, so nothing else is touched.
fn remove_orphan_partitions(
    log_dir: &std::path::Path,
    snapshot: &MetadataSnapshot,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(log_dir)? {
        let path = entry?.path();
        if !path
            .join(crate::storage::log::PARTITION_METADATA_FILE)
            .is_file()
        {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let owned = name.rsplit_once('-').is_some_and(|(topic, p)| {
            let partition: Option<i32> = p.parse().ok();
            snapshot
                .topics
                .get(topic)
                .zip(partition)
                .is_some_and(|(t, p)| p >= 0 && p < t.partition_count())
        });
        if !owned {
            tracing::warn!(
                "{}: not a partition of any topic, removing it",
                path.display()
            );
            std::fs::remove_dir_all(&path)?;
        }
    }
    Ok(())
}

pub fn run(config: BrokerConfig, cores: usize) -> anyhow::Result<()> {
    let log_dir = config.log_dir.clone();
    std::fs::create_dir_all(&log_dir)
        .map_err(|e| anyhow::anyhow!("log.dirs: cannot create {}: {e}", log_dir.display()))?;
    let marker = log_dir.join(CLEAN_SHUTDOWN_FILE);
    let clean = marker.exists();
    let snapshot = metadata::load(&log_dir, cores)?;
    remove_orphan_partitions(&log_dir, &snapshot)?;
    if clean {
        std::fs::remove_file(&marker)?;
        std::fs::File::open(&log_dir)?.sync_all()?;
    } else if !snapshot.topics.is_empty() {
        tracing::warn!(
            "no clean-shutdown marker in {}: recovering logs",
            log_dir.display()
        );
    }
    let (placeholder, port) = if config.listen_port == 0 {
        let (s, p) = reserve_port(&config.listen_host)?;
        (Some(s), p)
    } else {
        (None, config.listen_port)
    };
    let (events, events_rx) = std::sync::mpsc::channel::<Event>();
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])?;
    std::thread::spawn({
        let events = events.clone();
        move || {
            for sig in signals.forever() {
                let _ = events.send(Event::Signal(sig));
            }
        }
    });
    let lifecycle = Arc::new(Lifecycle {
        stop: AtomicBool::new(false),
        opened: AtomicUsize::new(0),
        connections_done: AtomicUsize::new(0),
    });
    let cpus = allowed_cpus();
    let mesh = MeshBuilder::<ShardMessage, _>::full(cores, 4096);
    let mut handles = Vec::new();
    for id in 0..cores {
        let placement = if cores <= cpus.len() {
            Placement::Fixed(cpus[id])
        } else {
            Placement::Unbound
        };
        let (config, mesh, snapshot, lifecycle, shard_events) = (
            config.clone(),
            mesh.clone(),
            snapshot.clone(),
            Arc::clone(&lifecycle),
            events.clone(),
        );
        let mut builder = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{id}"))
            .io_memory(config.io_memory_bytes);
        if config.spin_before_park_us > 0 {
            builder = builder
                .spin_before_park(std::time::Duration::from_micros(config.spin_before_park_us));
        }
        if config.stall_detection_ms > 0 {
            builder = builder.detect_stalls(Some(Box::new(StallThreshold {
                threshold: std::time::Duration::from_millis(config.stall_detection_ms),
            })));
        }
        let handle = builder
            .spawn(move || async move {
                let _notice = ExitNotice {
                    id,
                    events: shard_events.clone(),
                };
                shard_main(
                    id,
                    cores,
                    port,
                    config,
                    mesh,
                    snapshot,
                    clean,
                    lifecycle,
                    shard_events,
                )
                .await
            })
            .map_err(|e| anyhow::anyhow!("cannot start shard {id}: {e}"))?;
        handles.push(handle);
    }
    drop(events);
    let mut ready = 0;
    while ready < cores {
        match events_rx.recv() {
            Ok(Event::Ready(Ok(()))) => ready += 1,
            Ok(Event::Ready(Err(e))) => anyhow::bail!("{e}"),
            Ok(Event::Signal(sig)) => anyhow::bail!("signal {sig} during start-up"),
            Ok(Event::ShardExited(id)) => anyhow::bail!("shard {id} stopped during start-up"),
            Err(_) => anyhow::bail!("the shards stopped during start-up"),
        }
    }
    drop(placeholder);
    println!("shardlog: listening on {}:{port}", config.listen_host);
    tracing::info!(
        "serving {} topics on {cores} shards, data in {}",
        snapshot.topics.len(),
        log_dir.display()
    );
    let failed_shard = loop {
        match events_rx.recv() {
            Ok(Event::Signal(sig)) => {
                tracing::info!("signal {sig}: shutting down");
                break None;
            }
            Ok(Event::ShardExited(id)) => {
                tracing::error!("shard {id} stopped unexpectedly: shutting down");
                break Some(id);
            }
            Ok(Event::Ready(_)) => {}
            Err(_) => break None,
        }
    };
    lifecycle.stop.store(true, Ordering::SeqCst);
    let mut all_closed = true;
    for h in handles {
        all_closed &= h.join().unwrap_or(false);
    }
    if let Some(id) = failed_shard {
        anyhow::bail!("shard {id} stopped unexpectedly; logs will be recovered at the next start");
    }
    if all_closed {
        let f = std::fs::File::create(&marker)?;
        f.sync_all()?;
        std::fs::File::open(&log_dir)?.sync_all()?;
        tracing::info!("clean shutdown");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn shard_main(
    id: usize,
    count: usize,
    port: u16,
    config: BrokerConfig,
    mesh: MeshBuilder<ShardMessage, glommio::channels::channel_mesh::Full>,
    snapshot: MetadataSnapshot,
    clean: bool,
    lifecycle: Arc<Lifecycle>,
    events: std::sync::mpsc::Sender<Event>,
) -> bool {
    let ready = |r: Result<(), String>| {
        let _ = events.send(Event::Ready(r));
    };
    let Ok((senders, receivers)) = mesh.join().await else {
        ready(Err(format!("shard {id}: cannot join the shard mesh")));
        return false;
    };
    let host = config.listen_host.clone();
    let producer_id_blocks = if id == 0 {
        match crate::txn::producer_ids::Allocator::load(&config.log_dir) {
            Ok(a) => Some(a),
            Err(e) => {
                ready(Err(format!("{e:#}")));
                return false;
            }
        }
    } else {
        None
    };
    let shard = Shard::new(id, count, Rc::new(config), senders, producer_id_blocks);
    if shard.config.advertised_port.is_none() {
        shard.advertised_port.set(port);
    }
    if let Err(e) = crate::storage::probe_direct_io(&shard.config.log_dir, id).await {
        ready(Err(format!(
            "direct I/O on {}: {e}",
            shard.config.log_dir.display()
        )));
        return false;
    }
    shard.spawn_mesh_receivers(receivers);
    glommio::spawn_local(Rc::clone(&shard.groups).run_timers()).detach();
    glommio::spawn_local(Rc::clone(&shard.groups).run_offset_expiry()).detach();
    shard.apply_metadata(snapshot, clean).await;
    shard.load_group_offsets().await;
    Rc::clone(&shard.txns).load(&shard).await;
    // Accept only once every shard has its partitions open.
    lifecycle.opened.fetch_add(1, Ordering::SeqCst);
    while lifecycle.opened.load(Ordering::SeqCst) < count {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    let listener = match glommio::net::TcpListener::bind((host.as_str(), port)) {
        Ok(l) => l,
        Err(e) => {
            ready(Err(format!("cannot listen on {host}:{port}: {e}")));
            return false;
        }
    };
    ready(Ok(()));
    // Every shard's partitions are open: unfinished transactions can get their markers.
    glommio::spawn_local(Rc::clone(&shard.txns).run(Rc::clone(&shard))).detach();
    glommio::spawn_local(Rc::clone(&shard).run_producer_expiry()).detach();
    glommio::spawn_local(Rc::clone(&shard).run_retention()).detach();
    glommio::spawn_local(Rc::clone(&shard).run_read_ahead_release()).detach();
    if shard.config.latency_report_ms > 0 {
        crate::timing::enable();
        glommio::spawn_local(Rc::clone(&shard).run_latency_report()).detach();
    }
    glommio::spawn_local(Rc::clone(&shard).run_cleaner()).detach();
    glommio::spawn_local({
        let (shard, lifecycle) = (Rc::clone(&shard), Arc::clone(&lifecycle));
        async move {
            while !lifecycle.stop.load(Ordering::SeqCst) {
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
            shard.stopping.set(true);
            shard.groups.close();
            shard.stop_event.notify(usize::MAX);
        }
    })
    .detach();
    loop {
        let stop = shard.stop_event.listen();
        if shard.stopping.get() {
            break;
        }
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stop.await;
            None
        })
        .await;
        match accepted {
            Some(Ok(stream)) => {
                glommio::spawn_local(connection::serve(Rc::clone(&shard), stream)).detach();
            }
            Some(Err(e)) => {
                tracing::warn!("accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            None => break,
        }
    }
    drop(listener);
    // Let requests in flight finish, then wait for every shard to get there before closing logs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shard.in_flight.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    lifecycle.connections_done.fetch_add(1, Ordering::SeqCst);
    while lifecycle.connections_done.load(Ordering::SeqCst) < count && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    shard.close_partitions().await
}
