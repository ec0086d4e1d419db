//! The store writer: one thread draining a bounded channel into batched RocksDB writes.
//!
//! The proxy must never wait on storage unless it asked to: [`WriterHandle::try_write`]
//! never blocks and reports a full channel, so the caller can fail open and record a gap.
//! Durability (DESIGN §3):
//! - `relaxed`: batches go to the WAL unsynced, and the WAL is fsynced at least every
//!   100 ms;
//! - `strict`: a write sent with [`WriterHandle::write_durable`] is acknowledged only
//!   after the batch holding it was fsynced.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::db::{Store, StoreError};
use crate::model::Record;

/// How hard the writer works to keep what it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync at least every `sync_interval`.
    Relaxed,
    /// fsync before acknowledging durable writes.
    Strict,
}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Durability mode.
    pub durability: Durability,
    /// Messages the channel holds before `try_write` reports it full.
    pub capacity: usize,
    /// Longest time between fsyncs in relaxed mode.
    pub sync_interval: Duration,
    /// Most messages folded into one batch.
    pub max_batch: usize,
    /// With relaxed durability, how long the writer lets records pile up after the first
    /// one arrives before writing them as one batch. Waking the writer for every record
    /// cost more CPU than the writes themselves (a futex wake and a RocksDB write each).
    pub batch_delay: Duration,
    /// Most bytes of records queued and not yet written ([`Record::approx_size`]); past it
    /// `try_write` reports the queue full. Counting messages alone let a bulk write's
    /// images pile up to hundreds of megabytes.
    pub max_queued_bytes: u64,
    /// A batch stops taking messages past this many bytes.
    pub max_batch_bytes: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Relaxed,
            capacity: 16 * 1024,
            sync_interval: Duration::from_millis(100),
            max_batch: 1024,
            batch_delay: Duration::from_millis(5),
            max_queued_bytes: 32 << 20,
            max_batch_bytes: 4 << 20,
        }
    }
}

/// Why a write was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum WriteRejected {
    /// The channel is full: the store is lagging.
    #[error("the store writer is lagging (queue full)")]
    Full(Vec<Record>),
    /// The writer has stopped.
    #[error("the store writer has stopped")]
    Stopped(Vec<Record>),
}

/// The result of a durable write, delivered once it is on disk (or failed).
pub type DurableAck = oneshot::Receiver<Result<(), Arc<StoreError>>>;

enum Message {
    Records(
        Vec<Record>,
        Option<oneshot::Sender<Result<(), Arc<StoreError>>>>,
        u64,
    ),
    Shutdown,
}

/// Counters the writer keeps.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Records written.
    pub written: AtomicU64,
    /// Batches written.
    pub batches: AtomicU64,
    /// Batches that failed to write.
    pub failures: AtomicU64,
    /// Records refused because the channel was full.
    pub rejected: AtomicU64,
    /// Bytes of records queued and not yet written.
    pub queued_bytes: AtomicU64,
    /// Time spent in RocksDB writes (and syncs), in nanoseconds.
    pub batch_nanos: AtomicU64,
    /// The longest single batch write, in nanoseconds.
    pub batch_nanos_max: AtomicU64,
    /// The last write failed (the store is failing until one succeeds).
    pub failing: AtomicBool,
    /// The writer thread has ended.
    pub stopped: AtomicBool,
}

/// The store a writer writes to. After a failed write (a full disk) RocksDB refuses
/// every later write until the database is reopened, so the writer reopens it once
/// nobody else holds it; others take it from here for each use instead of keeping it.
#[derive(Clone)]
pub struct StoreSlot(Arc<Slot>);

struct Slot {
    path: std::path::PathBuf,
    summarizer: Option<Arc<dyn crate::Summarizer>>,
    store: Mutex<Option<Arc<Store>>>,
}

impl StoreSlot {
    fn new(store: Arc<Store>) -> Self {
        StoreSlot(Arc::new(Slot {
            path: store.path().to_path_buf(),
            summarizer: store.summarizer(),
            store: Mutex::new(Some(store)),
        }))
    }

    /// The store, unless the writer is reopening it.
    pub fn get(&self) -> Option<Arc<Store>> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Store>>> {
        self.0.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes and reopens the store when only the slot holds it (or opens it when an
    /// earlier reopen failed); whether it did.
    fn reopen(&self) -> Result<bool, StoreError> {
        let mut slot = self.lock();
        if slot.as_ref().is_some_and(|s| Arc::strong_count(s) > 1) {
            return Ok(false);
        }
        // RocksDB allows one open instance per directory: close before opening.
        *slot = None;
        let Some(summarizer) = self.0.summarizer.clone() else {
            return Err(StoreError::ReadOnly {
                path: self.0.path.clone(),
            });
        };
        *slot = Some(Arc::new(Store::open(&self.0.path, summarizer)?));
        Ok(true)
    }
}

impl WriterStats {
    /// Why the writer cannot keep records now (stopped, or its last write failed), if so.
    pub fn failure(&self) -> Option<&'static str> {
        if self.stopped.load(Ordering::Relaxed) {
            Some("the store writer has stopped")
        } else if self.failing.load(Ordering::Relaxed) {
            Some("the store's last write failed: disk full or an I/O error")
        } else {
            None
        }
    }
}

/// Sends records to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: SyncSender<Message>,
    slot: StoreSlot,
    stats: Arc<WriterStats>,
    /// Woken after every batch written.
    drained: Arc<tokio::sync::Notify>,
    max_queued_bytes: u64,
}

/// The writer thread; stopping it flushes what it was given.
pub struct Writer {
    handle: WriterHandle,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread for `store`.
    pub fn start(store: Arc<Store>, config: WriterConfig) -> Writer {
        let (tx, rx) = sync_channel(config.capacity.max(1));
        let stats = Arc::new(WriterStats::default());
        let drained = Arc::new(tokio::sync::Notify::new());
        let slot = StoreSlot::new(store);
        let handle = WriterHandle {
            tx,
            slot: slot.clone(),
            stats: stats.clone(),
            drained: drained.clone(),
            max_queued_bytes: config.max_queued_bytes,
        };
        let thread = std::thread::Builder::new()
            .name("flux-store-writer".into())
            .spawn(move || run(slot, config, rx, stats, drained))
            .ok();
        Writer { handle, thread }
    }

    /// A handle for sending records.
    pub fn handle(&self) -> WriterHandle {
        self.handle.clone()
    }

    /// Writes and syncs everything queued, then stops the thread.
    pub fn stop(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        let _ = self.handle.tx.send(Message::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Handles may outlive the writer; the store is closed with it (unless someone
        // else still holds it).
        *self.handle.slot.lock() = None;
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

impl WriterHandle {
    /// Queues records without waiting; a full queue hands them back.
    pub fn try_write(&self, records: Vec<Record>) -> Result<(), WriteRejected> {
        self.send(records, None)
    }

    /// Queues records that must be durable; the returned receiver resolves once they are
    /// fsynced (in strict mode) or written (in relaxed mode).
    pub fn write_durable(&self, records: Vec<Record>) -> Result<DurableAck, WriteRejected> {
        let (ack, rx) = oneshot::channel();
        self.send(records, Some(ack))?;
        Ok(rx)
    }

    fn send(
        &self,
        records: Vec<Record>,
        ack: Option<oneshot::Sender<Result<(), Arc<StoreError>>>>,
    ) -> Result<(), WriteRejected> {
        let bytes: u64 = records.iter().map(|r| r.approx_size() as u64).sum();
        let queued = self.stats.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        let over = queued + bytes > self.max_queued_bytes && queued > 0;
        let sent = if over {
            Err(TrySendError::Full(Message::Records(records, ack, bytes)))
        } else {
            self.tx.try_send(Message::Records(records, ack, bytes))
        };
        sent.map_err(|e| {
            self.stats.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            let (full, message) = match e {
                TrySendError::Full(m) => (true, m),
                TrySendError::Disconnected(m) => (false, m),
            };
            let records = match message {
                Message::Records(r, _, _) => r,
                Message::Shutdown => Vec::new(),
            };
            self.stats
                .rejected
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            if full {
                WriteRejected::Full(records)
            } else {
                WriteRejected::Stopped(records)
            }
        })
    }

    /// Bytes of records queued and not yet written.
    pub fn queued_bytes(&self) -> u64 {
        self.stats.queued_bytes.load(Ordering::Relaxed)
    }

    /// Waits until at most `bytes` are queued, or `within` has passed; whether the queue
    /// got there. For senders that would rather slow down than lose records.
    pub async fn wait_below(&self, bytes: u64, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let drained = self.drained.notified();
            if self.queued_bytes() <= bytes {
                return true;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                return self.queued_bytes() <= bytes;
            }
        }
    }

    /// The writer's counters.
    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }

    /// The store, for others that write or compact it (retention): take it for each use.
    pub fn slot(&self) -> StoreSlot {
        self.slot.clone()
    }
}

fn run(
    slot: StoreSlot,
    config: WriterConfig,
    rx: Receiver<Message>,
    stats: Arc<WriterStats>,
    drained: Arc<tokio::sync::Notify>,
) {
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    let mut stopping = false;
    let mut since_trim = 0u64;
    let mut failure = Failure::default();
    while !stopping {
        if failure.since.is_some() {
            failure.recover(&slot, &stats);
        }
        let first = match rx.recv_timeout(config.sync_interval) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                if unsynced {
                    if let Some(store) = slot.get() {
                        sync(&store, &stats, &mut unsynced, &mut last_sync);
                    }
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = Batch::default();
        batch.take(first, &mut stopping);
        if config.durability == Durability::Relaxed && !stopping {
            // Nobody waits on these records: sleeping (not blocking on the channel) lets
            // senders enqueue without waking this thread.
            std::thread::sleep(config.batch_delay);
        }
        let mut n = 1;
        while n < config.max_batch && !stopping && batch.bytes < config.max_batch_bytes {
            match rx.try_recv() {
                Ok(m) => batch.take(m, &mut stopping),
                Err(_) => break,
            }
            n += 1;
        }
        let Batch {
            records,
            acks,
            bytes,
        } = batch;
        let sync_now = stopping
            || (config.durability == Durability::Strict && !acks.is_empty())
            || last_sync.elapsed() >= config.sync_interval;
        let began = Instant::now();
        let result = match slot.get() {
            None => Err(StoreError::WriterGone),
            // A bare durability barrier: what earlier batches left unsynced must be synced.
            Some(store) if records.is_empty() => {
                if sync_now && unsynced {
                    store.sync()
                } else {
                    Ok(())
                }
            }
            Some(store) => store.write(&records, sync_now),
        };
        let took = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
        stats.batch_nanos.fetch_add(took, Ordering::Relaxed);
        stats.batch_nanos_max.fetch_max(took, Ordering::Relaxed);
        match &result {
            Err(_) => failure.lost(records.len() as u64, &stats),
            Ok(()) => failure.ended(&slot, &stats),
        }
        match &result {
            Ok(()) => {
                stats
                    .written
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                stats.batches.fetch_add(1, Ordering::Relaxed);
                if sync_now {
                    last_sync = Instant::now();
                    unsynced = false;
                } else {
                    unsynced = true;
                }
            }
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("store write of {} records failed: {e}", records.len());
            }
        }
        drop(records);
        let left = stats.queued_bytes.fetch_sub(bytes, Ordering::Relaxed) - bytes;
        drained.notify_waiters();
        since_trim += bytes;
        if left == 0 && since_trim >= TRIM_AFTER {
            // A burst (a bulk write's images) is over: hand the memory it used back.
            since_trim = 0;
            release_free_memory();
        }
        let result = result.map_err(Arc::new);
        for ack in acks {
            let _ = ack.send(result.clone());
        }
    }
    if let (true, Some(store)) = (unsynced, slot.get()) {
        sync(&store, &stats, &mut unsynced, &mut last_sync);
    }
    stats.stopped.store(true, Ordering::Relaxed);
}

/// A failure of the store in progress: since when, how many records it cost, and when
/// the writer last tried to get the store back.
#[derive(Default)]
struct Failure {
    since: Option<std::time::SystemTime>,
    records: u64,
    tried: Option<Instant>,
}

/// How often a failed store is probed (and reopened).
const RECOVERY_INTERVAL: Duration = Duration::from_secs(1);

impl Failure {
    fn lost(&mut self, records: u64, stats: &WriterStats) {
        if self.since.is_none() {
            self.since = Some(std::time::SystemTime::now());
            self.tried = Some(Instant::now());
        }
        self.records += records;
        stats.failing.store(true, Ordering::Relaxed);
    }

    /// Probes a failed store with a small synced write; when RocksDB still refuses
    /// (it does after a failed WAL write), reopens it.
    fn recover(&mut self, slot: &StoreSlot, stats: &WriterStats) {
        if self.tried.is_some_and(|t| t.elapsed() < RECOVERY_INTERVAL) {
            return;
        }
        self.tried = Some(Instant::now());
        let probe = |slot: &StoreSlot| slot.get().map(|s| s.write(&[], true));
        if let Some(Ok(())) = probe(slot) {
            self.ended(slot, stats);
            return;
        }
        match slot.reopen() {
            Ok(true) => {
                tracing::info!("store reopened after a failure");
                if let Some(Ok(())) = probe(slot) {
                    self.ended(slot, stats);
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("store still failing: {e}"),
        }
    }

    /// The store writes again: records what the failure cost as a gap.
    fn ended(&mut self, slot: &StoreSlot, stats: &WriterStats) {
        let Some(since) = self.since.take() else {
            return;
        };
        stats.failing.store(false, Ordering::Relaxed);
        let lost = std::mem::take(&mut self.records);
        tracing::warn!("the store writes again; {lost} records were lost while it failed");
        if lost == 0 {
            return;
        }
        let gap = Record::Gap(crate::model::Gap {
            at: crate::nanos(since),
            until: crate::nanos(std::time::SystemTime::now()),
            table: None,
            count: lost,
            reason: crate::model::GapReason::StoreFailed,
            request: None,
        });
        if let Some(store) = slot.get() {
            if let Err(e) = store.write(&[gap], false) {
                tracing::error!("recording the failure's gap: {e}");
            }
        }
    }
}

/// Bytes written between returns of freed memory to the system.
const TRIM_AFTER: u64 = 64 << 20;

/// Returns the allocator's free memory to the system (glibc keeps it otherwise).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What the writer gathered for one RocksDB write.
#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    acks: Vec<oneshot::Sender<Result<(), Arc<StoreError>>>>,
    bytes: u64,
}

impl Batch {
    fn take(&mut self, m: Message, stopping: &mut bool) {
        match m {
            Message::Records(r, ack, b) => {
                if self.records.is_empty() {
                    self.records = r;
                } else {
                    self.records.extend(r);
                }
                self.acks.extend(ack);
                self.bytes += b;
            }
            Message::Shutdown => *stopping = true,
        }
    }
}

fn sync(store: &Store, stats: &WriterStats, unsynced: &mut bool, last_sync: &mut Instant) {
    match store.sync() {
        Ok(()) => {
            *unsynced = false;
            *last_sync = Instant::now();
        }
        Err(e) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!("store fsync failed: {e}");
        }
    }
}
