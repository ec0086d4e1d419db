//! The record model: what the proxy captures, as stored.
//!
//! Everything is appended, never rewritten: a transaction's outcome is its own record,
//! and a mutation's fate is resolved at query time from its transaction's records.

use serde::{Deserialize, Serialize};

/// Nanoseconds since the Unix epoch.
pub type Nanos = u64;

/// A transaction, unique across proxy restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TxId {
    /// When the proxy process started (ns), so ids from different runs never collide.
    pub boot: Nanos,
    /// The proxy session.
    pub session: u64,
    /// The transaction's number within the session.
    pub n: u64,
}

/// What a statement did to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A new row (including the insert arm of an upsert).
    Insert,
    /// A changed row.
    Update,
    /// A removed row.
    Delete,
}

impl Op {
    /// `INSERT`, `UPDATE` or `DELETE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "INSERT",
            Op::Update => "UPDATE",
            Op::Delete => "DELETE",
        }
    }
}

/// One row changed by one statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutation {
    /// Schema-qualified table (`public.users`); partitions are mapped to their root.
    pub table: String,
    /// Primary-key values as text, in key-column order; `None` for tables without one
    /// (queryable by request and time, not by `--id`).
    pub key: Option<Vec<String>>,
    /// When the statement completed.
    pub at: Nanos,
    /// What happened to the row.
    pub op: Op,
    /// The row before, as the JSON PostgreSQL produced (`None` for inserts, or when the
    /// before image could not be captured: see the gap records).
    pub before: Option<String>,
    /// The row after, as JSON (`None` for deletes).
    pub after: Option<String>,
    /// The request that made the change, if it was tagged.
    pub request: Option<String>,
    /// The transaction it belongs to.
    pub tx: TxId,
    /// Its position among the transaction's mutations (for savepoint rollbacks).
    pub tx_index: u32,
}

/// Something that happened to a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxEvent {
    /// `COMMIT` succeeded (or an implicit transaction completed).
    Committed,
    /// Rolled back: `ROLLBACK`, an error, `COMMIT` of a failed transaction, a lost connection.
    RolledBack,
    /// `ROLLBACK TO SAVEPOINT` undid the mutations with `tx_index` in `from..to`.
    RolledBackTo {
        /// First undone index.
        from: u32,
        /// One past the last undone index.
        to: u32,
    },
    /// The proxy lost the connection while `COMMIT` was in flight.
    Unknown,
}

/// A transaction event, appended when the proxy learns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    /// The transaction.
    pub tx: TxId,
    /// When the proxy learnt it.
    pub at: Nanos,
    /// What happened.
    pub event: TxEvent,
}

/// Writes that happened but could not be captured, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// When.
    pub at: Nanos,
    /// The end of the affected time range (equal to `at` for a single statement).
    pub until: Nanos,
    /// The table, where known.
    pub table: Option<String>,
    /// How many writes (statements or events) were affected, where known.
    pub count: u64,
    /// Why (`COPY FROM`, `TRUNCATE`, `store lagging: 120 events dropped`, …).
    pub reason: String,
    /// The request, where known.
    pub request: Option<String>,
}

/// Anything the writer stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A row change.
    Mutation(Mutation),
    /// A transaction event.
    Tx(TxRecord),
    /// A capture gap.
    Gap(Gap),
    /// A statement a request ran (new variants go last: values are encoded by position).
    Statement(StatementRecord),
    /// An application's span, from OTLP.
    Span(Span),
    /// An HTTP request the gateway relayed to the app, and its response.
    Exchange(Exchange),
    /// A database the proxy relayed sessions to (kept in `meta`): what replay refuses
    /// to use as its scratch database.
    Source(Source),
}

impl Record {
    /// About how many bytes the record holds in memory, for bounding queues by size.
    pub fn approx_size(&self) -> usize {
        // The record itself plus a few allocations' headers.
        const BASE: usize = std::mem::size_of::<Record>() + 64;
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        BASE + match self {
            Record::Mutation(m) => {
                m.table.len()
                    + opt(&m.before)
                    + opt(&m.after)
                    + opt(&m.request)
                    + m.key
                        .as_ref()
                        .map_or(0, |k| k.iter().map(|v| v.len() + 24).sum())
            }
            Record::Statement(st) => st.sql.len() + st.request.len() + opt(&st.error),
            Record::Span(sp) => {
                sp.name.len()
                    + sp.attributes
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 48)
                        .sum::<usize>()
                    + sp.events.len() * 128
            }
            Record::Exchange(x) => x.body.len() + x.response_body.len() + x.target.len(),
            Record::Gap(g) => g.reason.len(),
            Record::Tx(_) | Record::Source(_) => 0,
        }
    }
}

/// A database a recording proxy sat in front of: the upstream's address as configured
/// (`host:port`, or a socket directory) and a database name sessions used.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Source {
    /// `--upstream`'s host and port.
    pub addr: String,
    /// The database a session connected to.
    pub database: String,
}

/// An HTTP request the gateway (`flux proxy --http-listen`) relayed to the app, with its
/// response: what `flux incident replay` sends again and compares against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// The request id (the trace id the gateway kept or minted).
    pub request: String,
    /// When the request arrived.
    pub at: Nanos,
    /// Until the response's last byte was sent (or the exchange ended otherwise).
    pub duration: u64,
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and query, as the client sent them.
    pub target: String,
    /// Request headers in order (redacted ones hold `<redacted>`; hop-by-hop ones left out).
    pub headers: Vec<(String, String)>,
    /// Request body, up to the gateway's limit.
    pub body: Vec<u8>,
    /// The whole body is in `body` (else it was over the limit or did not arrive whole, and
    /// the request cannot be replayed).
    pub body_complete: bool,
    /// The response status; `None` when the app never answered.
    pub status: Option<u16>,
    /// Response headers.
    pub response_headers: Vec<(String, String)>,
    /// Response body, up to the limit.
    pub response_body: Vec<u8>,
    /// The whole response body is in `response_body`.
    pub response_complete: bool,
    /// What went wrong (upstream unreachable, client gone), when something did.
    pub error: Option<String>,
}

impl Exchange {
    /// Whether replay can send this request again as it came in.
    pub fn replayable(&self) -> bool {
        self.body_complete
    }
}

/// A statement a tagged request ran, as the proxy saw it complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementRecord {
    /// The request id.
    pub request: String,
    /// When the proxy forwarded it.
    pub at: Nanos,
    /// Until its completion reached the proxy, in nanoseconds.
    pub duration: u64,
    /// SQL text as the client sent it.
    pub sql: String,
    /// `CommandComplete` tag (`UPDATE 1`); `None` when it failed.
    pub tag: Option<String>,
    /// SQLSTATE of the error, when it failed.
    pub sqlstate: Option<String>,
    /// The error's message, when it failed.
    pub error: Option<String>,
    /// The application span that issued it (sqlcommenter `traceparent`'s parent id), when
    /// known; the statement's own span is recorded under it.
    pub parent_span: Option<String>,
}

/// What kind of work a span stands for (OTLP's `SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    /// Not said.
    Unspecified,
    /// In-process work.
    Internal,
    /// Handling an incoming request (the request's root, usually).
    Server,
    /// An outgoing call (HTTP client, database).
    Client,
    /// Sending a message.
    Producer,
    /// Receiving a message.
    Consumer,
}

/// Where a span came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanSource {
    /// The application's OpenTelemetry SDK, over OTLP.
    App,
    /// The proxy: one span per statement it relayed.
    Proxy,
}

/// Something that happened during a span (OTLP span event), e.g. an exception.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanEvent {
    /// Event name (`exception`).
    pub name: String,
    /// When.
    pub at: Nanos,
    /// Attributes, values as text.
    pub attributes: Vec<(String, String)>,
}

/// One span of a request's trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// The request id: the W3C trace id (32 lowercase hex) for application spans; the
    /// request id the statement was tagged with for the proxy's spans.
    pub trace: String,
    /// Span id (16 lowercase hex).
    pub id: String,
    /// The parent span's id; `None` for a root.
    pub parent: Option<String>,
    /// Name (`POST /checkout`, `payment.charge`, `db.insert(orders)`).
    pub name: String,
    /// Kind.
    pub kind: SpanKind,
    /// Start (ns since the epoch).
    pub start: Nanos,
    /// End (ns since the epoch).
    pub end: Nanos,
    /// Status `ERROR`, with its description; `None` for unset/ok.
    pub error: Option<String>,
    /// Attributes, values as text (arrays and maps as JSON).
    pub attributes: Vec<(String, String)>,
    /// Events.
    pub events: Vec<SpanEvent>,
    /// The resource's `service.name`.
    pub service: Option<String>,
    /// Application or proxy.
    pub source: SpanSource,
}

impl Span {
    /// An attribute's value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first of several attribute names that is present (old and new semantic
    /// convention names).
    pub fn attr_any(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.attr(k))
    }

    /// Duration in nanoseconds (0 if the clock went backwards).
    pub fn duration(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
}

/// A request as `flux tail` lists it, derived from its spans (kept up to date as spans
/// arrive, in any order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSummary {
    /// The request id.
    pub id: String,
    /// HTTP method, when the app reported one.
    pub method: Option<String>,
    /// Route (`/users/{id}`) or else path, when reported.
    pub path: Option<String>,
    /// HTTP response status.
    pub status: Option<u16>,
    /// Start of the request (its root span, else its earliest span).
    pub start: Nanos,
    /// Duration (root span, else earliest start to latest end), ns.
    pub duration: u64,
    /// The root cause's one-line summary, if anything failed.
    pub error: Option<String>,
    /// The root span's service.
    pub service: Option<String>,
    /// The root span's name (or the first statement's span for DB-only requests).
    pub name: String,
    /// How many spans are recorded.
    pub spans: u32,
    /// Whether any span came from the application (otherwise it is DB-only).
    pub app: bool,
}

/// What became of a mutation, resolved from its transaction's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Its transaction committed and no savepoint rollback undid it.
    Committed,
    /// Its transaction, or a savepoint rollback, undid it.
    RolledBack,
    /// The proxy lost the connection while `COMMIT` was in flight.
    Unknown,
    /// No outcome recorded yet (the transaction is still open).
    Pending,
}

impl Outcome {
    /// Resolves the outcome of mutation number `index` of a transaction from its events.
    pub fn resolve(index: u32, events: &[TxEvent]) -> Outcome {
        let mut last = Outcome::Pending;
        for event in events {
            match *event {
                TxEvent::RolledBackTo { from, to } if (from..to).contains(&index) => {
                    return Outcome::RolledBack
                }
                TxEvent::RolledBackTo { .. } => {}
                TxEvent::Committed => last = Outcome::Committed,
                TxEvent::RolledBack => last = Outcome::RolledBack,
                TxEvent::Unknown => last = Outcome::Unknown,
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savepoint_rollback_undoes_only_its_range() {
        let events = [TxEvent::RolledBackTo { from: 2, to: 4 }, TxEvent::Committed];
        let got: Vec<Outcome> = (0..6).map(|i| Outcome::resolve(i, &events)).collect();
        use Outcome::*;
        assert_eq!(
            got,
            [Committed, Committed, RolledBack, RolledBack, Committed, Committed]
        );
        assert_eq!(Outcome::resolve(0, &[]), Pending);
        assert_eq!(Outcome::resolve(0, &[TxEvent::RolledBack]), RolledBack);
        assert_eq!(Outcome::resolve(0, &[TxEvent::Unknown]), Unknown);
    }
}
