//! `flux-record`: the record model — what the proxy captures and the store keeps.
//!
//! A crate of its own so the proxy can emit these types without depending on the store
//! (RocksDB): a gap's reason, for one, is one enum from the statement's analysis to
//! `flux state history`, never text parsed back.
//!
//! Everything is appended, never rewritten: a transaction's outcome is its own record,
//! and a mutation's fate is resolved at query time from its transaction's records.

use serde::{Deserialize, Serialize};

/// Nanoseconds since the Unix epoch.
pub type Nanos = u64;

/// Nanoseconds since the Unix epoch (0 before it).
pub fn nanos(t: std::time::SystemTime) -> Nanos {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

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
    /// Why.
    pub reason: GapReason,
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
    /// In a replay run's record: which recorded request a replayed one sent again.
    Replayed(Replayed),
}

/// A replayed request and the recorded one it sent again (kept in a replay run's `meta`),
/// so `RUN:ID` finds the replay by the original's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    /// The recorded request's id.
    pub original: String,
    /// The replay's request id.
    pub replay: String,
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
            Record::Statement(st) => {
                st.sql.len()
                    + st.request.len()
                    + opt(&st.error)
                    + st.tables.iter().map(|t| t.len() + 24).sum::<usize>()
            }
            Record::Span(sp) => {
                sp.name.len()
                    + sp.attributes
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 48)
                        .sum::<usize>()
                    + sp.events.len() * 128
            }
            Record::Exchange(x) => x.body.len() + x.response_body.len() + x.target.len(),
            Record::Gap(_) => 64,
            Record::Replayed(r) => r.original.len() + r.replay.len(),
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
    /// Its command as the proxy's analysis read it (`insert`, `select`, `begin`), lower
    /// case; `None` for an empty statement.
    pub verb: Option<String>,
    /// The tables it names as its target (or first `FROM`), as written: `public.orders`.
    pub tables: Vec<String>,
    /// Rows its `CommandComplete` tag reports (`INSERT 0 3` → 3); `None` when the tag has
    /// no count (`BEGIN`) or the statement failed.
    pub rows: Option<u64>,
}

impl StatementRecord {
    /// The name of its span: `db.insert(orders)`, `db.select(users)`, `db.begin`.
    pub fn span_name(&self) -> String {
        match (&self.verb, self.tables.first()) {
            (Some(verb), Some(table)) => format!("db.{verb}({})", table_name(table)),
            (Some(verb), None) => format!("db.{verb}"),
            (None, _) => "db.statement".to_string(),
        }
    }

    /// The proxy's span for the statement: its name, timing, rows and error. `id` must be
    /// unique in the store.
    pub fn span(&self, id: String) -> Span {
        let mut attributes = vec![
            ("db.system".to_string(), "postgresql".to_string()),
            ("db.statement".to_string(), self.sql.clone()),
        ];
        if let Some(rows) = self.rows {
            attributes.push(("db.rows".to_string(), rows.to_string()));
        }
        if let Some(code) = &self.sqlstate {
            attributes.push(("db.sqlstate".to_string(), code.clone()));
        }
        Span {
            trace: self.request.clone(),
            id,
            parent: self.parent_span.clone(),
            name: self.span_name(),
            kind: SpanKind::Client,
            start: self.at,
            end: self.at.saturating_add(self.duration),
            error: self.sqlstate.as_ref().map(|code| {
                format!(
                    "{} (SQLSTATE {code})",
                    self.error.as_deref().unwrap_or("error")
                )
            }),
            attributes,
            events: Vec::new(),
            service: None,
            source: SpanSource::Proxy,
        }
    }
}

/// How the store names a table: the schema most tables live in, `public`, is dropped,
/// others stay (`public.orders` → `orders`, `audit.log` stays). It takes a name as the
/// catalog or the proxy's analysis gives it (identifiers folded, quotes removed). The one
/// place `public.` is dropped.
pub fn table_name(qualified: &str) -> &str {
    qualified.strip_prefix("public.").unwrap_or(qualified)
}

/// Rows a `CommandComplete` tag reports: its last word when the tag has a count
/// (`INSERT 0 3` → 3, `UPDATE 2` → 2, `SELECT 0` → 0), `None` when it has none (`BEGIN`,
/// `CREATE TABLE`). The one reading of a tag's count.
pub fn tag_rows(tag: &str) -> Option<u64> {
    let mut words = tag.split_whitespace();
    let _verb = words.next()?;
    words.last()?.parse().ok()
}

/// Why writes could not be captured (whole, or without their before image). Rendered as
/// text only when shown (`flux_read::gap`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GapReason {
    /// A statement form capture does not image (`TRUNCATE`, `COPY FROM`, `MERGE`, …).
    Statement(String),
    /// The proxy's SQL parser did not understand the statement.
    NotUnderstood,
    /// Another statement of the same query string was not understood, so none was
    /// rewritten (the split between them may not be the server's).
    StringNotUnderstood,
    /// Writes inside a routine (`a DO block or procedure`) are invisible to `RETURNING`.
    Routine(String),
    /// `EXECUTE` of a write prepared with SQL `PREPARE` (its name).
    Prepared(String),
    /// `pg_catalog` could not be read (why; `None`: not read yet).
    CatalogUnreadable(Option<String>),
    /// The table is not in the catalog snapshot.
    TableNotFound,
    /// An unqualified name found in several schemas whose tables capture treats differently.
    Ambiguous,
    /// What the table is keeps capture away (a view, rules, a foreign table, …).
    Relation(String),
    /// Row-level security applies SELECT policies to returned rows.
    RowSecurity,
    /// A role the statement may run as lacks table-level SELECT.
    NoSelect(String),
    /// A role set in the same query string or pipeline, whose privileges were not read yet.
    PrivilegesUnread(String),
    /// The session's role was set from a value only the server knows.
    RoleUnknown,
    /// DDL ran earlier in the transaction or pipeline: the catalog is not settled.
    CatalogUnsettled,
    /// The rows were imaged, but without their before image, for this reason.
    NoBeforeImage(String),
    /// Rows written by triggers on the table.
    Triggers {
        /// The table.
        table: String,
        /// Its trigger names, comma-separated.
        names: String,
    },
    /// Rows changed by a foreign key's ON DELETE/UPDATE action.
    Cascade {
        /// The referenced table the write touched.
        parent: String,
    },
    /// The store lagged or failed and records of this kind were dropped.
    Lost(Lost),
    /// The store failed (disk full, I/O error): these records were not kept.
    StoreFailed,
    /// A gap recorded before reasons were typed (schema version 3), as it was written.
    Legacy(String),
}

/// What kind of record a [`GapReason::Lost`] gap stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Lost {
    /// Row changes.
    Mutations,
    /// Transaction outcomes.
    Outcomes,
    /// Gap records themselves.
    Gaps,
    /// Statements of requests.
    Statements,
    /// Spans.
    Spans,
    /// HTTP exchanges the gateway relayed.
    Exchanges,
    /// Which database the proxy was in front of.
    Sources,
    /// A replay run's map from recorded to replayed requests.
    Replays,
}

impl GapReason {
    /// A short, fixed name for the reason (a metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            GapReason::Statement(_) => "statement_form",
            GapReason::NotUnderstood | GapReason::StringNotUnderstood => "not_understood",
            GapReason::Routine(_) => "routine",
            GapReason::Prepared(_) => "sql_prepare",
            GapReason::CatalogUnreadable(_) => "catalog_unreadable",
            GapReason::TableNotFound => "table_not_found",
            GapReason::Ambiguous => "ambiguous_name",
            GapReason::Relation(_) => "relation_kind",
            GapReason::RowSecurity => "row_security",
            GapReason::NoSelect(_) | GapReason::PrivilegesUnread(_) | GapReason::RoleUnknown => {
                "privileges"
            }
            GapReason::CatalogUnsettled => "catalog_unsettled",
            GapReason::NoBeforeImage(_) => "no_before_image",
            GapReason::Triggers { .. } => "triggers",
            GapReason::Cascade { .. } => "cascade",
            GapReason::Lost(_) => "store_lagging",
            GapReason::StoreFailed => "store_failed",
            GapReason::Legacy(_) => "legacy",
        }
    }

    /// The write was recorded; only its before image is missing.
    pub fn partial(&self) -> bool {
        match self {
            GapReason::NoBeforeImage(_) => true,
            GapReason::Legacy(text) => text.ends_with(LEGACY_PARTIAL),
            _ => false,
        }
    }
}

/// How schema-3 stores wrote a before-image gap's reason (`<why>: before image unavailable`),
/// kept only to read those records.
pub const LEGACY_PARTIAL: &str = ": before image unavailable";

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
    fn statement_spans_are_named_from_the_analysis_and_counts_read_once() {
        let st = |verb: Option<&str>, tables: &[&str]| StatementRecord {
            request: "r".into(),
            at: 0,
            duration: 1,
            sql: String::new(),
            tag: None,
            sqlstate: None,
            error: None,
            parent_span: None,
            verb: verb.map(str::to_string),
            tables: tables.iter().map(|t| t.to_string()).collect(),
            rows: None,
        };
        assert_eq!(
            st(Some("insert"), &["orders"]).span_name(),
            "db.insert(orders)"
        );
        assert_eq!(
            st(Some("insert"), &["public.Orders"]).span_name(),
            "db.insert(Orders)"
        );
        assert_eq!(
            st(Some("select"), &["audit.log"]).span_name(),
            "db.select(audit.log)"
        );
        assert_eq!(st(Some("begin"), &[]).span_name(), "db.begin");
        assert_eq!(st(None, &[]).span_name(), "db.statement");
        assert_eq!(tag_rows("INSERT 0 3"), Some(3));
        assert_eq!(tag_rows("UPDATE 2"), Some(2));
        assert_eq!(tag_rows("SELECT 0"), Some(0));
        assert_eq!(tag_rows("BEGIN"), None);
        assert_eq!(tag_rows("CREATE TABLE"), None);
        assert_eq!(tag_rows(""), None);
    }

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
