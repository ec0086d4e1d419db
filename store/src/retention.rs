//! Retention: dropping the oldest records, by age (`--retain 7d`) or by size
//! (`--retain-size 20GiB`), consistently across families.
//!
//! The unit is the request. A request is expired when it *started* before the cutoff, and
//! then everything keyed by it goes in one batch with it — its summary and time-index
//! entry, its spans, statements and exchange (one range delete per family and request),
//! its row changes (point deletes through `mutations_by_request`) — so no request is ever
//! half there. Records that belong to no request are dropped by their own time by RocksDB
//! compaction filters, never by a scan: row changes no request tagged (`at`), transaction
//! outcomes (`at`), and gaps (one range delete, their key starts with the time).
//!
//! Nothing here waits on the writer or makes it wait longer than one small batch: a pass
//! builds each batch of up to [`CHUNK`] requests without the store's write lock and takes
//! it only for the write itself. Tombstones and filtered records free disk space as
//! RocksDB compacts (files with many deletions are compacted early; every file at least
//! once a day); `flux store compact` (or a size-triggered pass) compacts at once.
//!
//! Clocks: a request's start comes from the app's spans, its rows' times from the proxy.
//! A row written by a request kept near the cutoff keeps its transaction outcome unless
//! the app's clock runs ahead of the proxy's by more than the time between the two.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use rocksdb::{IteratorMode, WriteBatch};

use crate::db::{Store, StoreError};
use crate::keys;
use crate::layout::{
    EXCHANGES, FAMILIES, GAPS, MUTATIONS, MUTATIONS_BY_REQUEST, REQUESTS, REQUESTS_BY_TIME, SPANS,
    STATEMENTS,
};
use crate::model::Nanos;

/// A request's key in `requests_by_time` and its id.
type Indexed = (Vec<u8>, Vec<u8>);

/// Requests expired per write batch.
const CHUNK: usize = 256;

/// What a pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Expired {
    /// Requests removed, each with everything keyed by it.
    pub requests: u64,
    /// Their row changes.
    pub rows: u64,
    /// The cutoff applied (ns since the epoch): records before it are gone or filtered.
    pub before: Nanos,
}

/// How long and how much to keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Drop requests that started longer ago than this.
    pub max_age: Option<Duration>,
    /// Drop the oldest requests while the tables hold more bytes than this.
    pub max_size: Option<u64>,
}

impl Store {
    /// Removes every request that started before `before` with all its records, lets
    /// compaction drop untagged rows and outcomes older than `before`, and removes older
    /// gaps. Safe while the writer runs.
    pub fn expire_before(&self, before: Nanos) -> Result<Expired, StoreError> {
        let mut expired = Expired {
            before,
            ..Expired::default()
        };
        loop {
            let chunk = self.oldest_requests(before, CHUNK)?;
            if chunk.is_empty() {
                break;
            }
            let mut batch = WriteBatch::default();
            for (time_key, request) in &chunk {
                expired.rows += self.delete_request(&mut batch, time_key, request)?;
            }
            expired.requests += chunk.len() as u64;
            let _serial = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.db.write(batch).map_err(|e| self.rocks(e))?;
        }
        let mut end = Vec::with_capacity(8);
        keys::put_u64(&mut end, before);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(GAPS), [0u8; 0].as_slice(), end.as_slice());
        self.db.write(batch).map_err(|e| self.rocks(e))?;
        self.floor.fetch_max(before, Ordering::Relaxed);
        // The time-ordered ranges just emptied are cheap to compact now; the rest frees as
        // RocksDB compacts the files the tombstones landed in.
        for family in [REQUESTS_BY_TIME, GAPS] {
            self.db
                .compact_range_cf(self.cf(family), None::<&[u8]>, Some(end.as_slice()));
        }
        Ok(expired)
    }

    /// Up to `n` requests that started before `before`, oldest first: (time key, id).
    fn oldest_requests(&self, before: Nanos, n: usize) -> Result<Vec<Indexed>, StoreError> {
        let mut out = Vec::new();
        for entry in self
            .db
            .iterator_cf(self.cf(REQUESTS_BY_TIME), IteratorMode::Start)
        {
            let (k, _) = entry.map_err(|e| self.rocks(e))?;
            let Some((at, rest)) = keys::take_u64(&k) else {
                continue;
            };
            if at >= before || out.len() >= n {
                break;
            }
            let Some((request, _)) = keys::take_str(rest) else {
                continue;
            };
            out.push((k.to_vec(), request));
        }
        Ok(out)
    }

    /// Adds the deletes of one request's records to `batch`; how many row changes.
    fn delete_request(
        &self,
        batch: &mut WriteBatch,
        time_key: &[u8],
        request: &[u8],
    ) -> Result<u64, StoreError> {
        let mut prefix = Vec::with_capacity(request.len() + 2);
        keys::put_str(&mut prefix, request);
        let Some(end) = keys::prefix_end(&prefix) else {
            return Ok(0);
        };
        let mut rows = 0;
        for entry in self.scan(MUTATIONS_BY_REQUEST, &prefix, &prefix) {
            let (_, pointer) = entry?;
            batch.delete_cf(self.cf(MUTATIONS), pointer);
            rows += 1;
        }
        for family in [SPANS, STATEMENTS, MUTATIONS_BY_REQUEST] {
            batch.delete_range_cf(self.cf(family), prefix.as_slice(), end.as_slice());
        }
        batch.delete_cf(self.cf(REQUESTS), &prefix);
        batch.delete_cf(self.cf(EXCHANGES), request);
        batch.delete_cf(self.cf(REQUESTS_BY_TIME), time_key);
        Ok(rows)
    }

    /// Bytes of the store's tables (SST files) and memtables.
    pub fn table_bytes(&self) -> u64 {
        FAMILIES
            .iter()
            .map(|f| {
                self.int_property(f, "rocksdb.total-sst-files-size")
                    + self.int_property(f, "rocksdb.cur-size-all-mem-tables")
            })
            .sum()
    }

    /// A family's RocksDB integer property (0 when unavailable).
    pub(crate) fn int_property(&self, family: &str, name: &str) -> u64 {
        self.db
            .property_int_value_cf(self.cf(family), name)
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Compacts every family: tombstones and filtered records stop taking space.
    pub fn compact(&self) {
        for family in FAMILIES {
            self.db
                .compact_range_cf(self.cf(family), None::<&[u8]>, None::<&[u8]>);
        }
    }

    /// One retention pass at `now`: the age cutoff, then, while the tables exceed the size
    /// limit, the oldest requests in proportion to the excess (compacting to measure).
    pub fn apply(&self, policy: &Policy, now: SystemTime) -> Result<Expired, StoreError> {
        let now = crate::nanos(now);
        let mut total = Expired::default();
        if let Some(age) = policy.max_age {
            let before = now.saturating_sub(u64::try_from(age.as_nanos()).unwrap_or(u64::MAX));
            total = self.expire_before(before)?;
        }
        let Some(limit) = policy.max_size else {
            return Ok(total);
        };
        // Each round drops a share of what is left; a few rounds reach any limit.
        for _ in 0..8 {
            let size = self.table_bytes();
            if size <= limit {
                break;
            }
            let requests = self.int_property(REQUESTS_BY_TIME, "rocksdb.estimate-num-keys");
            // Aim 10% under the limit so the next pass has room.
            let target = limit - limit / 10;
            let share = (size - target) as f64 / size as f64;
            let drop = ((requests as f64 * share).ceil() as usize).max(1);
            let Some(before) = self.start_after(drop)? else {
                break;
            };
            let e = self.expire_before(before)?;
            total.requests += e.requests;
            total.rows += e.rows;
            total.before = total.before.max(e.before);
            self.compact();
            if e.requests == 0 {
                break;
            }
        }
        Ok(total)
    }

    /// The start time just after the `n`th oldest request's (the cutoff that expires `n`
    /// requests), or `None` without requests.
    fn start_after(&self, n: usize) -> Result<Option<Nanos>, StoreError> {
        let mut last = None;
        for entry in self
            .db
            .iterator_cf(self.cf(REQUESTS_BY_TIME), IteratorMode::Start)
            .take(n)
        {
            let (k, _) = entry.map_err(|e| self.rocks(e))?;
            last = keys::take_u64(&k).map(|(at, _)| at).or(last);
        }
        Ok(last.map(|at| at + 1))
    }
}

/// Runs `policy` every `every` on a thread of its own until `stop` is dropped or sent.
/// The store is taken from the writer's slot for each pass (the writer may reopen it).
pub fn spawn(
    slot: crate::StoreSlot,
    policy: Policy,
    every: Duration,
    stop: std::sync::mpsc::Receiver<()>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("flux-retention".into())
        .spawn(move || loop {
            let pass = slot
                .get()
                .map(|store| store.apply(&policy, SystemTime::now()));
            match pass {
                Some(Ok(e)) if e.requests > 0 => tracing::info!(
                    requests = e.requests,
                    rows = e.rows,
                    "retention removed the oldest requests"
                ),
                Some(Err(e)) => tracing::error!("retention pass failed: {e}"),
                _ => {}
            }
            match stop.recv_timeout(every) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        })
}
