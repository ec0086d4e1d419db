//! The scratch database: refusing the recorded one, and the URL the app gets (through the
//! replay proxy, password never shown).

use std::net::{SocketAddr, ToSocketAddrs};

use flux_store::Store;

use crate::run::ReplayError;

/// Refuses a scratch database that is one the recording proxy relayed sessions to.
pub(crate) fn refuse_recorded(
    store: &Store,
    scratch: &tokio_postgres::Config,
    shown: &str,
) -> Result<(), ReplayError> {
    let sources = store.sources().map_err(|source| ReplayError::Store {
        path: store.path().to_path_buf(),
        source,
    })?;
    if sources.is_empty() {
        tracing::warn!("the record does not say which database the proxy was in front of (recorded by an older flux): make sure [replay] database is a scratch copy");
    }
    let database = scratch
        .get_dbname()
        .or(scratch.get_user())
        .unwrap_or("postgres");
    let ports = scratch.get_ports();
    let mut addrs: Vec<String> = Vec::new();
    let mut sockets: Vec<SocketAddr> = Vec::new();
    for (i, host) in scratch.get_hosts().iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        match host {
            tokio_postgres::config::Host::Tcp(h) => {
                sockets.extend(resolve(h, port));
                addrs.push(format!("{h}:{port}"));
            }
            tokio_postgres::config::Host::Unix(dir) => {
                addrs.push(dir.join(format!(".s.PGSQL.{port}")).display().to_string());
            }
        }
    }
    for src in sources {
        if src.database != database {
            continue;
        }
        let same = addrs.contains(&src.addr) || {
            let (h, p) = split_host_port(&src.addr);
            resolve(h, p)
                .iter()
                .any(|a| sockets.iter().any(|b| same_server(a, b)))
        };
        if same {
            return Err(ReplayError::Refused {
                url: shown.to_string(),
                addr: src.addr,
                database: src.database,
            });
        }
    }
    Ok(())
}

pub(crate) fn split_host_port(addr: &str) -> (&str, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse().unwrap_or(5432),
        ),
        None => (addr, 5432),
    }
}

pub(crate) fn resolve(host: &str, port: u16) -> Vec<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .map(|a| a.collect())
        .unwrap_or_default()
}

/// Same address, or both loopback (or unspecified) on the same port: one server.
pub(crate) fn same_server(a: &SocketAddr, b: &SocketAddr) -> bool {
    let local = |s: &SocketAddr| s.ip().is_loopback() || s.ip().is_unspecified();
    a == b || (a.port() == b.port() && local(a) && local(b))
}

/// `user:secret@` → `user@`, for messages.
pub fn hide_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// The scratch URL with its host and port replaced by `addr` and its query dropped (the
/// replay proxy speaks plain TCP on loopback; it uses the scratch URL's TLS settings).
pub(crate) fn via_proxy(url: &str, addr: SocketAddr) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return url.to_string();
    };
    let _ = u.set_ip_host(addr.ip());
    let _ = u.set_port(Some(addr.port()));
    u.set_query(None);
    u.to_string()
}
