//! Headers at the gateway: hop-by-hop ones (RFC 9110 §7.6.1) dropped before forwarding,
//! and the ones recorded (redacted where asked).

use std::collections::HashSet;
use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one hop, not the request (RFC 9110 §7.6.1): never forwarded
/// as they came, never recorded.
pub(crate) const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

pub(crate) fn is_hop_by_hop(name: &HeaderName, connection: &[String]) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
        || name == header::UPGRADE
        || connection.iter().any(|c| c == name.as_str())
}

/// The header names a `Connection` header lists (they are hop-by-hop too).
pub(crate) fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Headers as recorded: hop-by-hop ones left out, redacted ones replaced.
pub(crate) fn recorded(headers: &HeaderMap, redact: &HashSet<String>) -> Vec<(String, String)> {
    let connection = connection_tokens(headers);
    headers
        .iter()
        .filter(|(name, _)| !is_hop_by_hop(name, &connection))
        .map(|(name, value)| {
            let value = if redact.contains(name.as_str()) {
                "<redacted>".to_string()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_string(), value)
        })
        .collect()
}

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, connection: &[String]) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n, connection))
        .cloned()
        .collect();
    for n in names {
        headers.remove(&n);
    }
}

/// The headers the app gets: hop-by-hop ones removed, the trace context continued with
/// the gateway span as parent, the client's address appended to `X-Forwarded-For`.
pub(crate) fn forward_headers(
    headers: &mut HeaderMap,
    connection: &[String],
    trace: &str,
    span_id: &str,
    flags: &str,
    peer: SocketAddr,
) {
    strip_hop_by_hop(headers, connection);
    if let Ok(v) = HeaderValue::from_str(&format!("00-{trace}-{span_id}-{flags}")) {
        headers.insert("traceparent", v);
    }
    let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert("x-forwarded-for", v);
    }
}
