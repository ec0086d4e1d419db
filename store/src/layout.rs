//! The column families of the RocksDB layout (their keys and values: [`crate::db`]).

/// Schema version, sequence counter, sources, replay pairs.
pub(crate) const META: &str = "meta";
pub(crate) const MUTATIONS: &str = "mutations";
pub(crate) const MUTATIONS_BY_REQUEST: &str = "mutations_by_request";
pub(crate) const TX: &str = "tx";
pub(crate) const GAPS: &str = "gaps";
pub(crate) const STATEMENTS: &str = "statements";
pub(crate) const SPANS: &str = "spans";
pub(crate) const REQUESTS: &str = "requests";
pub(crate) const REQUESTS_BY_TIME: &str = "requests_by_time";
pub(crate) const EXCHANGES: &str = "exchanges";
/// Every column family.
pub(crate) const FAMILIES: [&str; 10] = [
    META,
    REQUESTS,
    REQUESTS_BY_TIME,
    SPANS,
    STATEMENTS,
    MUTATIONS,
    MUTATIONS_BY_REQUEST,
    TX,
    GAPS,
    EXCHANGES,
];
