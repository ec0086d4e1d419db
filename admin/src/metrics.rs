//! Prometheus metrics, read from the counters each part keeps.
//!
//! Nothing here sits on the data path: sessions, capture and the writer bump atomics they
//! own, and a scrape reads them. Statement counts and latencies are kept only when the
//! proxy was asked to (`ProxyConfig::statement_metrics`, on with `--admin`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Where the counters come from; parts that are not running are `None`.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The proxy's sessions, bytes and statements.
    pub proxy: Option<Arc<flux_proxy::Stats>>,
    /// What capture handed to the store.
    pub capture: Option<Arc<flux_recorder::CaptureStats>>,
    /// The store writer.
    pub writer: Option<Arc<flux_store::WriterStats>>,
    /// The data dir, whose size on disk is reported.
    pub store_dir: Option<PathBuf>,
    /// The OTLP receiver.
    pub otlp: Option<Arc<flux_ingest::http::OtlpStats>>,
}

impl Sources {
    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!("encoding metrics failed: {e}");
        }
        out
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: impl EncodeCounterValue,
) -> std::fmt::Result {
    ConstCounter::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: impl EncodeGaugeValue,
) -> std::fmt::Result {
    ConstGauge::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for Sources {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        if let Some(p) = &self.proxy {
            proxy(&mut enc, p)?;
        }
        if let Some(c) = &self.capture {
            counter(
                &mut enc,
                "flux_capture_dropped_records",
                "Records dropped because the store lagged or failed (fail-open; each loss is also a gap)",
                load(&c.dropped),
            )?;
            counter(
                &mut enc,
                "flux_capture_rows",
                "Row images (inserts, updates, deletes) capture recorded",
                load(&c.rows),
            )?;
            let gaps = c.gaps.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let mut family = enc.encode_descriptor(
                "flux_capture_gaps",
                "Writes capture could not record, by reason (store_lagging: lost to a lagging or failed store)",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in gaps {
                let labels = [("reason", reason)];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        if let Some(w) = &self.writer {
            writer(&mut enc, w)?;
        }
        if let Some(dir) = &self.store_dir {
            gauge(
                &mut enc,
                "flux_store_disk_bytes",
                "Size of the data dir on disk",
                dir_size(dir),
            )?;
        }
        if let Some(o) = &self.otlp {
            counter(
                &mut enc,
                "flux_otlp_spans_accepted",
                "Spans received over OTLP and stored",
                load(&o.accepted_spans),
            )?;
            counter(
                &mut enc,
                "flux_otlp_spans_rejected",
                "Spans received over OTLP and not stored (store busy or failed; the exporter was asked to retry)",
                load(&o.rejected_spans),
            )?;
            counter(
                &mut enc,
                "flux_otlp_exports_refused",
                "OTLP exports refused whole (undecodable or an unsupported encoding)",
                load(&o.refused_exports),
            )?;
        }
        Ok(())
    }
}

fn proxy(enc: &mut DescriptorEncoder, p: &flux_proxy::Stats) -> std::fmt::Result {
    gauge(
        enc,
        "flux_proxy_client_sessions_open",
        "Client connections being served",
        load(&p.sessions_active),
    )?;
    counter(
        enc,
        "flux_proxy_client_sessions",
        "Client connections accepted",
        load(&p.sessions_total),
    )?;
    gauge(
        enc,
        "flux_proxy_upstream_sessions_open",
        "Connections to the database open",
        load(&p.upstream_active),
    )?;
    counter(
        enc,
        "flux_proxy_upstream_sessions",
        "Connections to the database opened",
        load(&p.upstream_total),
    )?;
    {
        let mut family = enc.encode_descriptor(
            "flux_proxy_bytes",
            "Bytes relayed, by direction",
            None,
            MetricType::Counter,
        )?;
        for (direction, v) in [
            ("client_to_server", &p.client_bytes),
            ("server_to_client", &p.server_bytes),
        ] {
            let labels = [("direction", direction)];
            ConstCounter::new(load(v)).encode(family.encode_family(&labels)?)?;
        }
    }
    counter(
        enc,
        "flux_proxy_protocol_errors",
        "Sessions closed for a client protocol violation",
        load(&p.protocol_errors),
    )?;
    counter(
        enc,
        "flux_proxy_upstream_errors",
        "Sessions closed because the database failed or could not be reached",
        load(&p.upstream_errors),
    )?;
    counter(
        enc,
        "flux_proxy_cancels_forwarded",
        "CancelRequests forwarded to the database",
        load(&p.cancels_forwarded),
    )?;
    let s = &p.statements;
    {
        let mut family = enc.encode_descriptor(
            "flux_proxy_statements",
            "Statements finished, by command (first word of the command tag; error: failed)",
            None,
            MetricType::Counter,
        )?;
        for (command, v) in flux_proxy::COMMANDS.iter().zip(&s.by_command) {
            let labels = [("command", *command)];
            ConstCounter::new(load(v)).encode(family.encode_family(&labels)?)?;
        }
    }
    // The encoder accumulates the buckets itself.
    let mut buckets: Vec<(f64, u64)> = flux_proxy::LATENCY_BUCKETS
        .iter()
        .zip(&s.buckets)
        .map(|(&bound, n)| (bound, load(n)))
        .collect();
    buckets.push((f64::INFINITY, load(&s.overflow)));
    let count = buckets.iter().map(|(_, n)| n).sum();
    let mut m = enc.encode_descriptor(
        "flux_proxy_statement_duration_seconds",
        "Statement latency as the proxy sees it: from forwarding the statement to its completion",
        None,
        MetricType::Histogram,
    )?;
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        load(&s.sum_nanos) as f64 / 1e9,
        count,
        &buckets,
        None,
    )
}

fn writer(enc: &mut DescriptorEncoder, w: &flux_store::WriterStats) -> std::fmt::Result {
    gauge(
        enc,
        "flux_store_queue_bytes",
        "Bytes of records queued for the store writer and not yet written",
        load(&w.queued_bytes),
    )?;
    counter(
        enc,
        "flux_store_records_written",
        "Records written to the store",
        load(&w.written),
    )?;
    counter(
        enc,
        "flux_store_batches",
        "Batches written to the store",
        load(&w.batches),
    )?;
    counter(
        enc,
        "flux_store_batch_failures",
        "Batch writes or syncs that failed",
        load(&w.failures),
    )?;
    counter(
        enc,
        "flux_store_records_refused",
        "Records the writer's queue refused (full or stopped)",
        load(&w.rejected),
    )?;
    counter(
        enc,
        "flux_store_batch_seconds",
        "Time spent writing (and syncing) batches; divide by flux_store_batches_total for the mean",
        load(&w.batch_nanos) as f64 / 1e9,
    )?;
    gauge(
        enc,
        "flux_store_batch_seconds_max",
        "The longest single batch write since start",
        load(&w.batch_nanos_max) as f64 / 1e9,
    )
}

/// Bytes of the files under `dir` (RocksDB keeps a flat directory; nested run stores of
/// replays count too).
fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}
