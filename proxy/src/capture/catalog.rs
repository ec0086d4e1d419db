//! What capture needs from `pg_catalog`: each table's primary key, whether the session's
//! role may read it, row-level security, and partition roots.
//!
//! Read over a side connection per (database, role) with `tokio-postgres`, on a stream the
//! proxy opens exactly as it opens a session's upstream (same host, TLS, Unix socket), and
//! logging in as the session's role. The proxy never sees client passwords, so this works
//! where the server trusts the proxy's host (trust/peer) or where the upstream URL carries
//! a password for it; otherwise capture records gaps that say the catalog was unreachable.
//! Snapshots are shared by all sessions on the same database and role, refreshed when DDL
//! passes through or an unknown table is written (at most once per [`REFRESH_EVERY`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::upstream::Upstream;

/// Minimum time between two refresh attempts of one catalog.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// A table as capture sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// `pg_class.oid`.
    pub oid: u32,
    /// Schema.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Primary-key columns in key order (empty: no primary key).
    pub pk: Vec<String>,
    /// Row-level security is enabled.
    pub rls: bool,
    /// The login role has SELECT on it (other roles: [`Snapshot::can_select`]).
    pub can_select: bool,
    /// Why capture must leave writes to it alone, whatever the role: a view, a foreign
    /// table, rules, a foreign partition or child. `None` for a plain or partitioned table.
    pub refusal: Option<&'static str>,
    /// The partition tree's root (the table itself when not a partition).
    pub root: u32,
    /// Its user triggers, comma-separated (rows they write are invisible to `RETURNING`).
    pub triggers: Option<String>,
    /// Tables whose rows its foreign keys' ON DELETE/UPDATE actions change (invisible too).
    pub cascades_to: Vec<String>,
    /// Partitioned, or has inheritance children: a write may land in another relation,
    /// so the row's `tableoid` is read back to say which.
    pub has_children: bool,
}

impl TableInfo {
    /// The name the store and the CLI use: `users` for `public.users`, else `schema.table`.
    pub fn display_name(&self) -> String {
        display_name(&self.schema, &self.name)
    }
}

/// The store's name for a table.
pub fn display_name(schema: &str, name: &str) -> String {
    if schema == "public" {
        name.to_string()
    } else {
        format!("{schema}.{name}")
    }
}

/// One read of the catalog.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// `server_version_num` (e.g. 150012, 180006).
    pub server_version: i32,
    /// The role the snapshot's `can_select` was read for (the login role).
    pub login: String,
    by_oid: HashMap<u32, Arc<TableInfo>>,
    by_name: HashMap<String, Vec<Arc<TableInfo>>>,
    /// Tables each other role (after `SET ROLE`) may SELECT, read on demand for this
    /// snapshot; `None` when the role does not exist.
    access: RwLock<HashMap<String, Option<Arc<std::collections::HashSet<u32>>>>>,
}

/// The result of resolving a table name.
#[derive(Debug)]
pub enum Lookup {
    /// One table, or several of that name in different schemas that agree on everything
    /// capture needs (the first; all of them, for per-role checks).
    Found(Arc<TableInfo>, Vec<Arc<TableInfo>>),
    /// Several schemas hold tables of that name that differ; `search_path` decides.
    Ambiguous,
    /// No such table in the snapshot.
    Missing,
}

impl Snapshot {
    /// Builds a snapshot from table rows (also used by tests); `can_select` is `login`'s.
    pub fn new(server_version: i32, login: &str, tables: Vec<TableInfo>) -> Self {
        let mut s = Snapshot {
            server_version,
            login: login.to_string(),
            ..Default::default()
        };
        for t in tables {
            let t = Arc::new(t);
            s.by_name.entry(t.name.clone()).or_default().push(t.clone());
            s.by_oid.insert(t.oid, t);
        }
        s
    }

    /// Resolves a name as written (`[table]` or `[schema, table]`, normalised). An
    /// unqualified name found in several schemas resolves only when they agree on primary
    /// key and access; the row's `tableoid` then says which one was written.
    pub fn lookup(&self, parts: &[String]) -> Lookup {
        let (schema, name) = match parts {
            [name] => (None, name),
            [.., schema, name] => (Some(schema), name),
            [] => return Lookup::Missing,
        };
        let Some(candidates) = self.by_name.get(name) else {
            return Lookup::Missing;
        };
        let mut matching = candidates
            .iter()
            .filter(|t| schema.is_none_or(|s| &t.schema == s));
        let Some(first) = matching.next() else {
            return Lookup::Missing;
        };
        let agree = |t: &Arc<TableInfo>| {
            t.pk == first.pk
                && t.rls == first.rls
                && t.can_select == first.can_select
                && t.refusal == first.refusal
        };
        let mut all = vec![first.clone()];
        for t in matching {
            if !agree(t) {
                return Lookup::Ambiguous;
            }
            all.push(t.clone());
        }
        Lookup::Found(first.clone(), all)
    }

    /// Whether `role` may SELECT the table: `None` until that role's privileges were read
    /// for this snapshot ([`Catalog::load_access`]).
    pub fn can_select(&self, role: &str, t: &TableInfo) -> Option<bool> {
        if role == self.login {
            return Some(t.can_select);
        }
        let access = self.access.read().ok()?;
        Some(match access.get(role)? {
            Some(oids) => oids.contains(&t.oid),
            None => false, // no such role: the server will refuse anyway
        })
    }

    /// Whether `role`'s privileges are known in this snapshot.
    pub fn knows_role(&self, role: &str) -> bool {
        role == self.login || self.access.read().is_ok_and(|a| a.contains_key(role))
    }

    /// The root table of the relation with this oid (a partition maps to its root).
    pub fn root_of(&self, oid: u32) -> Option<&Arc<TableInfo>> {
        let t = self.by_oid.get(&oid)?;
        self.by_oid.get(&t.root).or(Some(t))
    }

    /// Whether this is PostgreSQL 18 or later (`RETURNING old/new`).
    pub fn has_old_new(&self) -> bool {
        self.server_version >= 180000
    }
}

const TABLES_SQL: &str = "\
SELECT c.oid::int8, n.nspname::text, c.relname::text,
       ARRAY(SELECT a.attname::text
               FROM pg_index i
               CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              WHERE i.indrelid = c.oid AND i.indisprimary
              ORDER BY k.ord) AS pk,
       c.relrowsecurity,
       has_table_privilege($1::text, c.oid, 'SELECT'),
       coalesce(pg_partition_root(c.oid)::oid, c.oid)::int8,
       current_setting('server_version_num')::int4,
       (SELECT string_agg(t.tgname::text, ', ' ORDER BY t.tgname)
          FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal),
       ARRAY(SELECT DISTINCT f.conrelid::regclass::text
               FROM pg_constraint f
              WHERE f.confrelid = c.oid AND f.contype = 'f'
                AND (f.confdeltype IN ('c', 'n', 'd') OR f.confupdtype IN ('c', 'n', 'd'))),
       c.relkind::text,
       c.relhasrules,
       c.relhassubclass AND EXISTS (
         WITH RECURSIVE d(oid) AS (
           SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = c.oid
           UNION SELECT i.inhrelid FROM pg_inherits i JOIN d ON i.inhparent = d.oid)
         SELECT 1 FROM d JOIN pg_class x ON x.oid = d.oid
          WHERE x.relkind = 'f' OR x.relhasrules),
       c.relkind = 'p' OR c.relhassubclass
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg_toast%'";

/// The relations of [`TABLES_SQL`] a role may SELECT.
const ACCESS_SQL: &str = "\
SELECT c.oid::int8
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg_toast%'
   AND has_table_privilege($1::text, c.oid, 'SELECT')";

/// Why capture leaves a relation alone, from its kind and rules.
fn refusal(relkind: &str, has_rules: bool, odd_children: bool) -> Option<&'static str> {
    match relkind {
        "v" => Some("a view (rules or INSTEAD OF triggers decide what a write does)"),
        "m" => Some("a materialized view"),
        "f" => Some("a foreign table"),
        _ if has_rules => Some("the table has rules (RETURNING would change what they do)"),
        _ if odd_children => Some("the table has foreign or rule-bearing partitions or children"),
        _ => None,
    }
}

/// Why the catalog could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The side connection could not be opened.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Logging in or the query failed.
    #[error("{0}")]
    Query(String),
    /// The server did not answer in time.
    #[error("timed out")]
    TimedOut,
    /// No connection (a previous attempt failed).
    #[error("no connection")]
    NoConnection,
}

impl From<tokio_postgres::Error> for CatalogError {
    fn from(e: tokio_postgres::Error) -> Self {
        CatalogError::Query(e.to_string())
    }
}

/// Where and as whom to read one database's catalog.
#[derive(Debug, Clone)]
pub struct Target {
    /// The upstream server.
    pub upstream: Arc<Upstream>,
    /// TLS for the upstream, as sessions use it.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Connect timeout.
    pub timeout: Duration,
    /// The session's database.
    pub database: String,
    /// The session's role (whose privileges are checked).
    pub user: String,
    /// Who logs in: a dedicated catalog login, else the session's role.
    pub login: Option<crate::config::CatalogLogin>,
}

/// One database and role's catalog: the latest snapshot and the side connection.
#[derive(Default)]
pub struct Catalog {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    stale: AtomicBool,
    /// DDL ran: refresh even if the last attempt was recent.
    forced: AtomicBool,
    refresher: tokio::sync::Mutex<Refresher>,
    last_error: Mutex<Option<CatalogError>>,
}

#[derive(Default)]
struct Refresher {
    client: Option<tokio_postgres::Client>,
    last_attempt: Option<Instant>,
}

impl Refresher {
    /// The side connection, opened (again) when there is none or it closed.
    async fn client(&mut self, target: &Target) -> Result<&tokio_postgres::Client, CatalogError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(connect(target).await?);
        }
        self.client.as_ref().ok_or(CatalogError::NoConnection)
    }
}

impl Catalog {
    /// The latest snapshot without waiting (None until the first read succeeds).
    pub fn cached(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.read().ok().and_then(|s| s.clone())
    }

    /// The cached snapshot when it is not known to be out of date.
    pub fn fresh(&self) -> Option<Arc<Snapshot>> {
        if self.stale.load(Ordering::Relaxed) {
            return None;
        }
        self.cached()
    }

    /// Marks the snapshot out of date because an unknown table was written; it is re-read
    /// at most once per [`REFRESH_EVERY`] (views, temp tables and typos stay unknown).
    pub fn invalidate(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// Marks the snapshot out of date because DDL ran: the next write re-reads it at once.
    pub fn invalidate_now(&self) {
        self.forced.store(true, Ordering::Relaxed);
        self.stale.store(true, Ordering::Relaxed);
    }

    /// Why the last read failed, if it did.
    pub fn last_error(&self) -> Option<CatalogError> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// A current snapshot: the cached one unless it is stale (or missing), in which case
    /// it is re-read, at most once per [`REFRESH_EVERY`]. Returns what it has on failure.
    pub async fn current(&self, target: &Target) -> Option<Arc<Snapshot>> {
        if let Some(fresh) = self.fresh() {
            return Some(fresh);
        }
        let mut r = self.refresher.lock().await;
        // Another session may have refreshed while this one waited for the lock.
        if let Some(fresh) = self.fresh() {
            return Some(fresh);
        }
        let cached = self.cached();
        let forced = self.forced.swap(false, Ordering::Relaxed);
        if !forced && r.last_attempt.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
            return cached;
        }
        r.last_attempt = Some(Instant::now());
        self.stale.store(false, Ordering::Relaxed);
        match tokio::time::timeout(target.timeout * 2, read(&mut r, target)).await {
            Ok(Ok(snapshot)) => {
                let snapshot = Arc::new(snapshot);
                if let Ok(mut s) = self.snapshot.write() {
                    *s = Some(snapshot.clone());
                }
                if let Ok(mut e) = self.last_error.lock() {
                    *e = None;
                }
                Some(snapshot)
            }
            outcome => {
                let reason = match outcome {
                    Ok(Err(e)) => e,
                    Ok(Ok(_)) | Err(_) => CatalogError::TimedOut,
                };
                tracing::warn!(
                    database = %target.database,
                    user = %target.user,
                    "cannot read pg_catalog for capture: {reason}"
                );
                r.client = None;
                if let Ok(mut e) = self.last_error.lock() {
                    *e = Some(reason);
                }
                cached
            }
        }
    }
}

impl Catalog {
    /// Reads which tables `role` may SELECT into `snapshot`, unless known already. A role
    /// that does not exist is recorded as one that may read nothing.
    pub async fn load_access(&self, target: &Target, snapshot: &Snapshot, role: &str) {
        if snapshot.knows_role(role) {
            return;
        }
        let mut r = self.refresher.lock().await;
        if snapshot.knows_role(role) {
            return;
        }
        let read = async {
            let client = r.client(target).await?;
            match client.query(ACCESS_SQL, &[&role]).await {
                Ok(rows) => Ok(Some(
                    rows.iter()
                        .filter_map(|row| row.try_get::<_, i64>(0).ok())
                        .filter_map(|oid| u32::try_from(oid).ok())
                        .collect::<std::collections::HashSet<u32>>(),
                )),
                // `role "x" does not exist` (42704): nothing is readable as it.
                Err(e) if e.code().is_some_and(|c| c.code() == "42704") => Ok(None),
                Err(e) => Err(CatalogError::from(e)),
            }
        };
        match tokio::time::timeout(target.timeout * 2, read).await {
            Ok(Ok(oids)) => {
                if let Ok(mut a) = snapshot.access.write() {
                    a.insert(role.to_string(), oids.map(Arc::new));
                }
            }
            outcome => {
                let reason = match outcome {
                    Ok(Err(e)) => e,
                    Ok(Ok(_)) | Err(_) => CatalogError::TimedOut,
                };
                tracing::warn!(
                    role,
                    "cannot read the role's privileges for capture: {reason}"
                );
                r.client = None;
            }
        }
    }
}

/// Reads `target`'s catalog once on a connection of its own: how many relations capture
/// would know, or why it cannot read them (for the proxy's start-up check).
pub async fn probe(target: &Target) -> Result<usize, CatalogError> {
    let mut r = Refresher::default();
    let snapshot = tokio::time::timeout(target.timeout, read(&mut r, target))
        .await
        .map_err(|_| CatalogError::TimedOut)??;
    Ok(snapshot.by_oid.len())
}

async fn read(r: &mut Refresher, target: &Target) -> Result<Snapshot, CatalogError> {
    let client = r.client(target).await?;
    let rows = client.query(TABLES_SQL, &[&target.user]).await?;
    let mut version = 0;
    let mut tables = Vec::with_capacity(rows.len());
    for row in rows {
        let oid: i64 = row.try_get(0)?;
        let root: i64 = row.try_get(6)?;
        version = row.try_get(7)?;
        tables.push(TableInfo {
            oid: u32::try_from(oid).unwrap_or_default(),
            schema: row.try_get(1)?,
            name: row.try_get(2)?,
            pk: row.try_get(3)?,
            rls: row.try_get(4)?,
            can_select: row.try_get(5)?,
            root: u32::try_from(root).unwrap_or_default(),
            triggers: row.try_get(8)?,
            cascades_to: row.try_get(9)?,
            refusal: refusal(
                row.try_get::<_, String>(10)?.as_str(),
                row.try_get(11)?,
                row.try_get::<_, Option<bool>>(12)?.unwrap_or(false),
            ),
            has_children: row.try_get::<_, Option<bool>>(13)?.unwrap_or(true),
        });
    }
    if version == 0 {
        // An empty database: ask for the version on its own.
        let row = client
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await?;
        version = row.try_get(0)?;
    }
    Ok(Snapshot::new(version, &target.user, tables))
}

async fn connect(target: &Target) -> Result<tokio_postgres::Client, CatalogError> {
    let stream = target
        .upstream
        .connect(target.tls.as_ref(), target.timeout)
        .await
        .map_err(|e| CatalogError::Connect(e.to_string()))?;
    let mut config = tokio_postgres::Config::new();
    let (user, password) = match &target.login {
        Some(login) => (login.user.as_str(), login.password.as_ref()),
        None => (target.user.as_str(), target.upstream.password.as_ref()),
    };
    config
        .user(user)
        .dbname(&target.database)
        .application_name("flux-catalog")
        // The stream is already encrypted when the upstream wants TLS.
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config.connect_raw(stream, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("catalog connection ended: {e}");
        }
    });
    Ok(client)
}

/// All catalogs of one proxy, by (database, role).
#[derive(Default)]
pub struct Catalogs {
    map: Mutex<HashMap<(String, String), Arc<Catalog>>>,
}

impl Catalogs {
    /// The catalog for a database and role, created empty on first use.
    pub fn get(&self, database: &str, user: &str) -> Arc<Catalog> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((database.to_string(), user.to_string()))
            .or_default()
            .clone()
    }

    /// Marks every catalog of a database stale (DDL changes it for all roles).
    pub fn invalidate_database(&self, database: &str) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for ((db, _), c) in map.iter() {
            if db == database {
                c.invalidate_now();
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plain table the login role may read (also the planner tests' fixture).
    pub(crate) fn table(oid: u32, schema: &str, name: &str, pk: &[&str]) -> TableInfo {
        TableInfo {
            oid,
            schema: schema.into(),
            name: name.into(),
            pk: pk.iter().map(|s| s.to_string()).collect(),
            rls: false,
            can_select: true,
            root: oid,
            triggers: None,
            cascades_to: Vec::new(),
            has_children: false,
            refusal: None,
        }
    }

    #[test]
    fn lookup_by_name_schema_and_partition_root() {
        let mut part = table(3, "public", "events_2026", &["id"]);
        part.root = 2;
        let s = Snapshot::new(
            150000,
            "app",
            vec![
                table(1, "public", "users", &["id"]),
                table(2, "public", "events", &["id"]),
                part,
                table(4, "app", "users", &["id", "k"]),
            ],
        );
        assert!(matches!(s.lookup(&["users".into()]), Lookup::Ambiguous));
        match s.lookup(&["app".into(), "users".into()]) {
            Lookup::Found(t, _) => assert_eq!(t.display_name(), "app.users"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.lookup(&["nope".into()]), Lookup::Missing));
        assert_eq!(s.root_of(3).map(|t| t.name.as_str()), Some("events"));
        assert!(!s.has_old_new());
    }
}
