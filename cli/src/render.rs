//! Small pieces every layout shares.

/// `12ms`, `0.4ms`, `3.2s`.
pub(crate) fn duration(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms < 1.0 {
        format!("{ms:.1}ms")
    } else if ms < 10_000.0 {
        format!("{}ms", ms.round() as u64)
    } else {
        format!("{:.1}s", ms / 1000.0)
    }
}
