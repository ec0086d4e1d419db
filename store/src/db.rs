//! The RocksDB layout (DESIGN §4): column families with order-preserving keys, compact
//! postcard values, row images kept as the JSON PostgreSQL produced.
//!
//! | family | key | value |
//! |---|---|---|
//! | `meta` | name | schema version, next sequence number |
//! | `mutations` | table, key marker, key parts…, at, seq | [`Mutation`] |
//! | `mutations_by_request` | request, seq | key in `mutations` |
//! | `tx` | boot, session, n, seq | [`TxRecord`] |
//! | `gaps` | at, seq | [`Gap`] |
//! | `statements` | request, seq | [`StatementRecord`] |
//! | `spans` | request, span id | [`Span`] (application spans, and the proxy's statement spans) |
//! | `requests` | request | [`RequestSummary`], recomputed whenever a span of it arrives |
//! | `requests_by_time` | start, request | the same summary, for `tail` and time windows |
//! | `exchanges` | request | [`Exchange`]: the HTTP input and response the gateway relayed |
//!
//! One process owns a data dir (the daemon, as primary); the CLI opens it as a RocksDB
//! secondary, which reads a live store without taking its lock.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};

use crate::keys;
use std::collections::BTreeMap;

pub use crate::error::{private_dir, StoreError};
pub(crate) use crate::layout::*;
use crate::model::{
    Exchange, Gap, Mutation, Nanos, Record, Replayed, RequestSummary, Source, Span,
    StatementRecord, TxEvent, TxId, TxRecord,
};
use crate::summary::Summarizer;

/// One raw key/value pair as RocksDB returns it.
type KeyValue = (Box<[u8]>, Box<[u8]>);

/// The layout version this code reads and writes.
pub const SCHEMA_VERSION: u32 = 4;

/// The oldest layout the writer upgrades in place ([`crate::upgrade`]).
const UPGRADABLE_FROM: u64 = 2;

/// Up to this many spans a request's summary is rebuilt from its whole tree on each write.
const REBUILD_LIMIT: usize = 5_000;

const KEY_SCHEMA_VERSION: &[u8] = b"schema_version";
const KEY_NEXT_SEQ: &[u8] = b"next_seq";
/// Prefix of the `meta` keys holding [`Source`]s.
const KEY_SOURCE: &[u8] = b"source/";

/// Prefix of the `meta` keys holding [`Replayed`] pairs (a replay run's record).
const KEY_REPLAYED: &[u8] = b"replayed/";

fn source_key(src: &Source) -> Vec<u8> {
    let mut key = KEY_SOURCE.to_vec();
    keys::put_str(&mut key, src.addr.as_bytes());
    keys::put_str(&mut key, src.database.as_bytes());
    key
}

/// An open data dir.
pub struct Store {
    pub(crate) db: DB,
    path: PathBuf,
    /// The last sequence number used (persisted in `meta` with every batch).
    next_seq: AtomicU64,
    /// Serialises [`write`](Self::write): sequence numbers and the persisted counter must
    /// advance together, whoever calls it.
    pub(crate) write_lock: Mutex<()>,
    /// Records older than this (ns) are dropped by compaction where a compaction filter
    /// decides ([`crate::compaction`]); 0 keeps everything.
    pub(crate) floor: Arc<AtomicU64>,
    /// A secondary's own directory, removed on drop.
    _secondary: Option<tempfile::TempDir>,
    /// Computes request summaries as spans are written (`None` for readers).
    summarizer: Option<Arc<dyn Summarizer>>,
}

fn options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Every CLI call opens the store as a secondary, which replays the WAL the writer has
    // not flushed into tables yet; bounding the WAL keeps that replay (and so each
    // command's start-up) short: past this size RocksDB flushes the oldest memtables.
    opts.set_max_total_wal_size(16 << 20);
    // The proxy's memory must stay small whatever a bulk write sends (DESIGN §3): all
    // memtables together are flushed past 16 MB, each family's past 8 MB.
    opts.set_db_write_buffer_size(16 << 20);
    opts.set_write_buffer_size(8 << 20);
    opts
}

impl Store {
    /// Opens (creating if needed, upgrading an older schema in place) a data dir as its
    /// writer; `summarizer` keeps each request's summary as its spans arrive
    /// (`flux_read::Summaries`).
    pub fn open(path: &Path, summarizer: Arc<dyn Summarizer>) -> Result<Store, StoreError> {
        let rocks = |source| StoreError::Rocks {
            path: path.to_path_buf(),
            source,
        };
        let opts = options();
        let floor = Arc::new(AtomicU64::new(0));
        let cfs = FAMILIES.iter().map(|name| {
            let mut o = options();
            crate::compaction::configure(name, &mut o, &floor);
            ColumnFamilyDescriptor::new(*name, o)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(rocks)?;
        let store = Store {
            db,
            path: path.to_path_buf(),
            next_seq: AtomicU64::new(0),
            write_lock: Mutex::new(()),
            floor,
            _secondary: None,
            summarizer: Some(summarizer),
        };
        match store.meta_u64(KEY_SCHEMA_VERSION)? {
            None => {
                let cf = store.cf(META);
                store
                    .db
                    .put_cf(
                        cf,
                        KEY_SCHEMA_VERSION,
                        u64::from(SCHEMA_VERSION).to_be_bytes(),
                    )
                    .map_err(rocks)?;
            }
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            Some(v) if (UPGRADABLE_FROM..u64::from(SCHEMA_VERSION)).contains(&v) => {
                // Opening created the family version 2 lacked; gaps and statements are
                // rewritten; the version is written last.
                let n = crate::upgrade::from_v3(&store)?;
                tracing::info!(path = %path.display(), records = n, "upgrading store from schema version {v}");
                store
                    .db
                    .put_cf(
                        store.cf(META),
                        KEY_SCHEMA_VERSION,
                        u64::from(SCHEMA_VERSION).to_be_bytes(),
                    )
                    .map_err(rocks)?;
                tracing::info!(path = %path.display(), "store upgraded to schema version {SCHEMA_VERSION}");
            }
            Some(v) => {
                return Err(StoreError::Schema {
                    path: path.to_path_buf(),
                    found: v as u32,
                })
            }
        }
        let next = store.meta_u64(KEY_NEXT_SEQ)?.unwrap_or(1);
        store.next_seq.store(next, Ordering::Relaxed);
        Ok(store)
    }

    /// Opens a live data dir for reading, as a RocksDB secondary: no lock is taken, and
    /// [`catch_up`](Self::catch_up) sees what the writer has added since.
    pub fn open_reader(path: &Path) -> Result<Store, StoreError> {
        let rocks = |source| StoreError::Rocks {
            path: path.to_path_buf(),
            source,
        };
        let scratch = tempfile::Builder::new()
            .prefix("flux-reader-")
            .tempdir()
            .map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let mut opts = Options::default();
        opts.set_max_open_files(-1);
        // A data dir of the oldest upgradable layout lacks a family; say so rather than
        // fail in RocksDB (the writer upgrades it when `flux proxy` next opens it).
        if let Ok(present) = DB::list_cf(&opts, path) {
            if !present.iter().any(|f| f == EXCHANGES) {
                return Err(StoreError::Schema {
                    path: path.to_path_buf(),
                    found: UPGRADABLE_FROM as u32,
                });
            }
        }
        // The writer may compact (retention does, every second) while a secondary opens:
        // a table file listed in the manifest it read can be gone by the time it opens it
        // (`IO error: No such file or directory … .sst`). The next attempt reads the newer
        // manifest; a handful of tries, then the error as it is.
        let mut attempt = 0;
        let db = loop {
            match DB::open_cf_as_secondary(&opts, path, scratch.path(), FAMILIES) {
                Ok(db) => break db,
                Err(e)
                    if attempt < 5
                        && e.kind() == rocksdb::ErrorKind::IOError
                        && e.to_string().contains("No such file or directory") =>
                {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20 * attempt));
                }
                Err(e) => return Err(rocks(e)),
            }
        };
        let store = Store {
            db,
            path: path.to_path_buf(),
            next_seq: AtomicU64::new(0),
            write_lock: Mutex::new(()),
            floor: Arc::default(),
            _secondary: Some(scratch),
            summarizer: None,
        };
        if let Some(v) = store.meta_u64(KEY_SCHEMA_VERSION)? {
            if v != u64::from(SCHEMA_VERSION) {
                return Err(StoreError::Schema {
                    path: path.to_path_buf(),
                    found: v as u32,
                });
            }
        }
        Ok(store)
    }

    /// For a reader: picks up what the writer has written since the last call.
    pub fn catch_up(&self) -> Result<(), StoreError> {
        self.db
            .try_catch_up_with_primary()
            .map_err(|e| self.rocks(e))
    }

    /// The data dir.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        // Every family in FAMILIES is opened (or created) with the DB.
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| unreachable!("column family {name} is opened with the store"))
    }

    pub(crate) fn rocks(&self, source: rocksdb::Error) -> StoreError {
        StoreError::Rocks {
            path: self.path.clone(),
            source,
        }
    }

    pub(crate) fn corrupt(&self, what: &'static str) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            what,
        }
    }

    fn meta_u64(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        let v = self
            .db
            .get_cf(self.cf(META), key)
            .map_err(|e| self.rocks(e))?;
        v.map(|v| {
            keys::take_u64(&v)
                .map(|(n, _)| n)
                .ok_or_else(|| self.corrupt("meta"))
        })
        .transpose()
    }

    /// The summarizer a writer was opened with (`None` for a reader).
    pub fn summarizer(&self) -> Option<Arc<dyn Summarizer>> {
        self.summarizer.clone()
    }

    /// Writes records atomically in one batch; `sync` makes it durable (fsync) before
    /// returning.
    pub fn write(&self, records: &[Record], sync: bool) -> Result<(), StoreError> {
        let _serial = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        let mut seq = self.next_seq.load(Ordering::Relaxed);
        // Spans of this batch by request, to recompute those requests' summaries.
        let mut new_spans: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
        for record in records {
            seq += 1;
            let value = postcard::to_stdvec(record).map_err(|_| self.corrupt("outgoing"))?;
            match record {
                Record::Mutation(m) => {
                    let key = mutation_key(m, seq);
                    if let Some(request) = &m.request {
                        let mut by_request = Vec::new();
                        keys::put_str(&mut by_request, request.as_bytes());
                        keys::put_u64(&mut by_request, seq);
                        batch.put_cf(self.cf(MUTATIONS_BY_REQUEST), by_request, &key);
                    }
                    batch.put_cf(self.cf(MUTATIONS), key, value);
                }
                Record::Tx(t) => {
                    let mut key = tx_prefix(&t.tx);
                    keys::put_u64(&mut key, seq);
                    batch.put_cf(self.cf(TX), key, value);
                }
                Record::Gap(g) => {
                    let mut key = Vec::with_capacity(16);
                    keys::put_u64(&mut key, g.at);
                    keys::put_u64(&mut key, seq);
                    batch.put_cf(self.cf(GAPS), key, value);
                }
                Record::Statement(st) => {
                    let mut key = Vec::with_capacity(st.request.len() + 10);
                    keys::put_str(&mut key, st.request.as_bytes());
                    keys::put_u64(&mut key, seq);
                    batch.put_cf(self.cf(STATEMENTS), key, value);
                    // The proxy's span for the statement; the id is unique in this store
                    // and marked so it cannot be mistaken for an SDK's random id.
                    let span = Record::Span(st.span(format!("f1{seq:014x}")));
                    let encoded =
                        postcard::to_stdvec(&span).map_err(|_| self.corrupt("outgoing span"))?;
                    if let Record::Span(span) = span {
                        batch.put_cf(self.cf(SPANS), span_key(&span.trace, &span.id), encoded);
                        new_spans.entry(st.request.as_str()).or_default().push(span);
                    }
                }
                Record::Exchange(x) => {
                    batch.put_cf(self.cf(EXCHANGES), x.request.as_bytes(), value);
                }
                Record::Source(src) => {
                    batch.put_cf(self.cf(META), source_key(src), value);
                }
                Record::Replayed(r) => {
                    let mut key = KEY_REPLAYED.to_vec();
                    key.extend_from_slice(r.original.as_bytes());
                    batch.put_cf(self.cf(META), key, value);
                }
                Record::Span(span) => {
                    // Stored as the writer received it: already encoded above.
                    batch.put_cf(self.cf(SPANS), span_key(&span.trace, &span.id), value);
                    new_spans
                        .entry(span.trace.as_str())
                        .or_default()
                        .push(span.clone());
                }
            }
        }
        for (request, spans) in new_spans {
            self.put_summary(&mut batch, request, spans)?;
        }
        batch.put_cf(self.cf(META), KEY_NEXT_SEQ, seq.to_be_bytes());
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo).map_err(|e| self.rocks(e))?;
        self.next_seq.store(seq, Ordering::Relaxed);
        Ok(())
    }

    /// Recomputes a request's summary from its stored spans and this batch's, and moves its
    /// time-index entry if its start changed (the root arrived after its children).
    fn put_summary(
        &self,
        batch: &mut WriteBatch,
        request: &str,
        new: Vec<Span>,
    ) -> Result<(), StoreError> {
        let Some(summarizer) = &self.summarizer else {
            return Err(StoreError::ReadOnly {
                path: self.path.clone(),
            });
        };
        let old = self.request(request)?;
        let summary = match &old {
            // A request id that tags a long batch job can gather millions of statements:
            // past a bound, fold new spans in instead of rebuilding the tree each batch.
            Some(old) if old.spans as usize >= REBUILD_LIMIT => summarizer.fold(old, &new),
            _ => {
                let mut spans = self.trace_spans(request)?;
                spans.extend(new);
                summarizer.summarize(request, spans)
            }
        };
        if old.as_ref() == Some(&summary) {
            return Ok(());
        }
        if let Some(old) = old {
            batch.delete_cf(self.cf(REQUESTS_BY_TIME), time_key(old.start, request));
        }
        let value = postcard::to_stdvec(&summary).map_err(|_| self.corrupt("outgoing request"))?;
        batch.put_cf(
            self.cf(REQUESTS_BY_TIME),
            time_key(summary.start, request),
            &value,
        );
        let mut key = Vec::new();
        keys::put_str(&mut key, request.as_bytes());
        batch.put_cf(self.cf(REQUESTS), key, value);
        Ok(())
    }

    /// Every span of a request (application and proxy), unordered.
    pub fn trace_spans(&self, request: &str) -> Result<Vec<Span>, StoreError> {
        let mut prefix = Vec::new();
        keys::put_str(&mut prefix, request.as_bytes());
        let mut out = Vec::new();
        for entry in self.scan(SPANS, &prefix, &prefix) {
            let (_, v) = entry?;
            match self.decode(&v, "span")? {
                Record::Span(s) => out.push(s),
                _ => return Err(self.corrupt("span")),
            }
        }
        Ok(out)
    }

    /// A request's summary, if any span of it is recorded.
    pub fn request(&self, request: &str) -> Result<Option<RequestSummary>, StoreError> {
        let mut key = Vec::new();
        keys::put_str(&mut key, request.as_bytes());
        let v = self
            .db
            .get_cf(self.cf(REQUESTS), key)
            .map_err(|e| self.rocks(e))?;
        v.map(|v| self.decode(&v, "request")).transpose()
    }

    /// Requests that started in `[from, to)`, oldest first, at most `limit`.
    pub fn requests_between(
        &self,
        from: Nanos,
        to: Nanos,
        limit: usize,
    ) -> Result<Vec<RequestSummary>, StoreError> {
        let mut start = Vec::new();
        keys::put_u64(&mut start, from);
        let mut out = Vec::new();
        for entry in self.scan(REQUESTS_BY_TIME, &start, &[]) {
            let (k, v) = entry?;
            let at = keys::take_u64(&k).map(|(at, _)| at);
            if at.is_none_or(|at| at >= to) || out.len() >= limit {
                break;
            }
            out.push(self.decode(&v, "request")?);
        }
        Ok(out)
    }

    /// The `n` requests that started last, oldest first.
    pub fn latest_requests(&self, n: usize) -> Result<Vec<RequestSummary>, StoreError> {
        let mut out = Vec::new();
        for entry in self
            .db
            .iterator_cf(self.cf(REQUESTS_BY_TIME), IteratorMode::End)
            .take(n)
        {
            let (_, v) = entry.map_err(|e| self.rocks(e))?;
            out.push(self.decode(&v, "request")?);
        }
        out.reverse();
        Ok(out)
    }

    /// Moves everything written so far from memtables (and the WAL) into tables, so readers
    /// opening the store do not replay it (after a bulk load such as `flux ingest`).
    pub fn flush(&self) -> Result<(), StoreError> {
        let cfs: Vec<&rocksdb::ColumnFamily> = FAMILIES.iter().map(|f| self.cf(f)).collect();
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())
            .map_err(|e| self.rocks(e))
    }

    /// Makes everything written so far durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true).map_err(|e| self.rocks(e))
    }

    /// Scans `family` from `start` while keys start with `prefix`.
    pub(crate) fn scan<'a>(
        &'a self,
        family: &str,
        start: &'a [u8],
        prefix: &'a [u8],
    ) -> impl Iterator<Item = Result<KeyValue, StoreError>> + 'a {
        self.db
            .iterator_cf(
                self.cf(family),
                IteratorMode::From(start, Direction::Forward),
            )
            .map(|r| r.map_err(|e| self.rocks(e)))
            .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
    }

    pub(crate) fn decode<T: serde::de::DeserializeOwned>(
        &self,
        bytes: &[u8],
        what: &'static str,
    ) -> Result<T, StoreError> {
        postcard::from_bytes(bytes).map_err(|_| self.corrupt(what))
    }

    fn mutation(&self, bytes: &[u8]) -> Result<Mutation, StoreError> {
        match self.decode(bytes, "mutation")? {
            Record::Mutation(m) => Ok(m),
            _ => Err(self.corrupt("mutation")),
        }
    }

    /// Every mutation of one row, oldest first, optionally within `[from, to)`.
    pub fn row_mutations(
        &self,
        table: &str,
        key: &[String],
        from: Option<Nanos>,
        to: Option<Nanos>,
    ) -> Result<Vec<Mutation>, StoreError> {
        let prefix = row_prefix(table, Some(key));
        let mut start = prefix.clone();
        keys::put_u64(&mut start, from.unwrap_or(0));
        let mut out = Vec::new();
        for entry in self.scan(MUTATIONS, &start, &prefix) {
            let (_, v) = entry?;
            let m = self.mutation(&v)?;
            if to.is_some_and(|to| m.at >= to) {
                break;
            }
            out.push(m);
        }
        Ok(out)
    }

    /// Every mutation a request made, in the order they were recorded.
    pub fn request_mutations(&self, request: &str) -> Result<Vec<Mutation>, StoreError> {
        let mut prefix = Vec::new();
        keys::put_str(&mut prefix, request.as_bytes());
        let mut out = Vec::new();
        for entry in self.scan(MUTATIONS_BY_REQUEST, &prefix, &prefix) {
            let (_, pointer) = entry?;
            if let Some(v) = self
                .db
                .get_cf(self.cf(MUTATIONS), &pointer)
                .map_err(|e| self.rocks(e))?
            {
                out.push(self.mutation(&v)?);
            }
        }
        Ok(out)
    }

    /// Request ids with at least one recorded mutation, statement or span that start with
    /// `prefix` (at most `limit`, sorted).
    pub fn requests_with_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut found = self.ids_with_prefix(MUTATIONS_BY_REQUEST, prefix, limit)?;
        found.extend(self.ids_with_prefix(STATEMENTS, prefix, limit)?);
        found.extend(self.ids_with_prefix(REQUESTS, prefix, limit)?);
        found.sort();
        found.dedup();
        found.truncate(limit);
        Ok(found)
    }

    /// Distinct leading request ids of `family`'s keys that start with `prefix`.
    fn ids_with_prefix(
        &self,
        family: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut found = Vec::new();
        let mut start = prefix.as_bytes().to_vec();
        loop {
            let first = self.scan(family, &start, prefix.as_bytes()).next();
            let Some(entry) = first else { break };
            let (k, _) = entry?;
            let (id, _) = keys::take_str(&k).ok_or_else(|| self.corrupt("request index"))?;
            // Skip past every key of this request.
            let mut encoded = Vec::new();
            keys::put_str(&mut encoded, &id);
            found.push(String::from_utf8_lossy(&id).into_owned());
            if found.len() >= limit {
                break;
            }
            match keys::prefix_end(&encoded) {
                Some(next) => start = next,
                None => break,
            }
        }
        Ok(found)
    }

    /// The statements a request ran, in the order they completed.
    pub fn request_statements(&self, request: &str) -> Result<Vec<StatementRecord>, StoreError> {
        let mut prefix = Vec::new();
        keys::put_str(&mut prefix, request.as_bytes());
        let mut out = Vec::new();
        for entry in self.scan(STATEMENTS, &prefix, &prefix) {
            let (_, v) = entry?;
            match self.decode(&v, "statement")? {
                Record::Statement(st) => out.push(st),
                _ => return Err(self.corrupt("statement")),
            }
        }
        Ok(out)
    }

    /// A transaction's events, in the order recorded.
    pub fn tx_events(&self, tx: &TxId) -> Result<Vec<TxEvent>, StoreError> {
        let prefix = tx_prefix(tx);
        let mut out = Vec::new();
        for entry in self.scan(TX, &prefix, &prefix) {
            let (_, v) = entry?;
            match self.decode(&v, "transaction")? {
                Record::Tx(TxRecord { event, .. }) => out.push(event),
                _ => return Err(self.corrupt("transaction")),
            }
        }
        Ok(out)
    }

    /// The HTTP exchange the gateway recorded for a request, if any.
    pub fn exchange(&self, request: &str) -> Result<Option<Exchange>, StoreError> {
        let Some(v) = self
            .db
            .get_cf(self.cf(EXCHANGES), request.as_bytes())
            .map_err(|e| self.rocks(e))?
        else {
            return Ok(None);
        };
        match self.decode(&v, "exchange")? {
            Record::Exchange(x) => Ok(Some(x)),
            _ => Err(self.corrupt("exchange")),
        }
    }

    /// The databases a recording proxy relayed sessions to (its upstream address and each
    /// database name sessions used).
    pub fn sources(&self) -> Result<Vec<Source>, StoreError> {
        let mut out = Vec::new();
        for entry in self.scan(META, KEY_SOURCE, KEY_SOURCE) {
            let (_, v) = entry?;
            match self.decode(&v, "source")? {
                Record::Source(s) => out.push(s),
                _ => return Err(self.corrupt("source")),
            }
        }
        Ok(out)
    }

    /// In a replay run's record: the replays of recorded requests whose id starts with
    /// `original` (up to `limit`).
    pub fn replays_of(&self, original: &str, limit: usize) -> Result<Vec<Replayed>, StoreError> {
        let mut prefix = KEY_REPLAYED.to_vec();
        prefix.extend_from_slice(original.as_bytes());
        let mut out = Vec::new();
        for entry in self.scan(META, &prefix, &prefix).take(limit) {
            let (_, v) = entry?;
            match self.decode(&v, "replayed")? {
                Record::Replayed(r) => out.push(r),
                _ => return Err(self.corrupt("replayed")),
            }
        }
        Ok(out)
    }

    /// Gaps recorded in `[from, to)`, for `table` when given (gaps naming no table are
    /// included: they may concern it).
    pub fn gaps(
        &self,
        from: Nanos,
        to: Nanos,
        table: Option<&str>,
    ) -> Result<Vec<Gap>, StoreError> {
        let mut start = Vec::new();
        keys::put_u64(&mut start, from);
        let mut out = Vec::new();
        for entry in self.scan(GAPS, &start, &[]) {
            let (_, v) = entry?;
            let gap = match self.decode(&v, "gap")? {
                Record::Gap(g) => g,
                _ => return Err(self.corrupt("gap")),
            };
            if gap.at >= to {
                break;
            }
            if table.is_none() || gap.table.is_none() || gap.table.as_deref() == table {
                out.push(gap);
            }
        }
        Ok(out)
    }
}

/// `table, marker, key parts…` — the prefix of one row's history (marker 1), or of a
/// keyless table's mutations (marker 0).
fn row_prefix(table: &str, key: Option<&[String]>) -> Vec<u8> {
    let mut out = Vec::new();
    keys::put_str(&mut out, table.as_bytes());
    match key {
        Some(parts) => {
            out.push(1);
            for part in parts {
                keys::put_str(&mut out, part.as_bytes());
            }
        }
        None => out.push(0),
    }
    out
}

pub(crate) fn mutation_key(m: &Mutation, seq: u64) -> Vec<u8> {
    let mut key = row_prefix(&m.table, m.key.as_deref());
    keys::put_u64(&mut key, m.at);
    keys::put_u64(&mut key, seq);
    key
}

fn span_key(request: &str, span: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(request.len() + span.len() + 4);
    keys::put_str(&mut key, request.as_bytes());
    keys::put_str(&mut key, span.as_bytes());
    key
}

pub(crate) fn time_key(start: Nanos, request: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(request.len() + 10);
    keys::put_u64(&mut key, start);
    keys::put_str(&mut key, request.as_bytes());
    key
}

fn tx_prefix(tx: &TxId) -> Vec<u8> {
    let mut key = Vec::with_capacity(32);
    keys::put_u64(&mut key, tx.boot);
    keys::put_u64(&mut key, tx.session);
    keys::put_u64(&mut key, tx.n);
    key
}
