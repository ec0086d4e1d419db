//! Capture must never change what a statement does. One test per class of statement the
//! regression suite (scripts/conformance.sh) showed capture could break: each runs a psql
//! script against a cluster directly and through `flux proxy` (capture on) against a
//! clone of it (same catalog, same OIDs), asserts the two transcripts are identical, and
//! then asserts what the store holds: the writes capture may read back are recorded, the
//! others are gaps that say why.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use flux_integration_tests::pg::{client_bin, free_port, Options, PgCluster, DB, PASSWORD, USER};
use flux_integration_tests::process::start_proxy;
use serde_json::Value;

mod common;

use common::{flux, Running};

/// Two clusters with the same catalog: `direct` for the reference run, `captured` behind
/// a capturing `flux proxy`.
struct Pair {
    direct: PgCluster,
    captured: PgCluster,
    data: tempfile::TempDir,
    proxy: Running,
    proxy_port: u16,
}

impl Pair {
    /// Runs `setup` (as the superuser) on one cluster, then clones it.
    fn new(setup: &str) -> Pair {
        let mut direct = PgCluster::start(Options::default());
        direct.admin_sql(setup);
        direct.stop();
        let mut captured = direct.clone_stopped();
        direct.start_server();
        captured.start_server();
        let data = common::private_tempdir();
        let proxy_port = free_port();
        let listen = format!("127.0.0.1:{proxy_port}");
        let mut cmd = flux();
        cmd.args(["proxy", "--listen", &listen, "--upstream", &captured.url()])
            .arg("--data-dir")
            .arg(data.path())
            .env("FLUX_LOG", "info");
        let proxy = Running(start_proxy(&mut cmd, &listen));
        Pair {
            direct,
            captured,
            data,
            proxy,
            proxy_port,
        }
    }

    /// Runs `sql` (as the superuser) on both clusters, outside the comparison: settings
    /// that must differ between them, such as a loopback server's socket.
    fn each(&self, sql: impl Fn(&PgCluster) -> String) {
        self.direct.admin_sql(&sql(&self.direct));
        self.captured.admin_sql(&sql(&self.captured));
    }

    /// Runs `script` with psql directly and through the proxy; asserts the transcripts
    /// (statements echoed, results, errors, in order) are identical and returns one.
    fn same_transcript(&self, script: &str) -> String {
        let dir = common::private_tempdir();
        let file = dir.path().join("script.sql");
        std::fs::write(&file, script).expect("write script");
        let direct = psql(self.direct.port, &file, &dir.path().join("direct.out"));
        let through = psql(self.proxy_port, &file, &dir.path().join("through.out"));
        assert!(
            direct == through,
            "capture changed what psql saw:\n{}",
            first_difference(&direct, &through)
        );
        let _ = &self.proxy;
        direct
    }

    /// `flux state history TABLE --id ID` as JSON: the row's recorded changes and the
    /// table's gaps.
    fn history(&self, table: &str, id: &str) -> Value {
        common::flux_json(self.data.path(), &["state", "history", table, "--id", id])
    }
}

/// Runs a script as pg_regress does (`-a`: each statement echoed; errors on the same
/// stream, in order) and returns the transcript.
fn psql(port: u16, script: &Path, out: &Path) -> String {
    let sink = File::create(out).expect("transcript file");
    let status = Command::new(client_bin("psql"))
        .args(["-X", "-a", "-q", "-v", "ON_ERROR_STOP=0", "-h", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-U", USER, "-d", DB, "-f"])
        .arg(script)
        .env("PGPASSWORD", PASSWORD)
        .env("PGTZ", "UTC")
        .stdout(Stdio::from(sink.try_clone().expect("dup")))
        .stderr(Stdio::from(sink))
        .status()
        .expect("run psql");
    assert!(status.success(), "psql failed to run");
    std::fs::read_to_string(out)
        .expect("read transcript")
        .replace(&format!("psql:{}:", script.display()), "psql:")
}

fn first_difference(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let i = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = i.saturating_sub(5);
    format!(
        "direct (line {i}):\n{}\n\nthrough flux:\n{}",
        a.get(from..(i + 5).min(a.len()))
            .unwrap_or_default()
            .join("\n"),
        b.get(from..(i + 5).min(b.len()))
            .unwrap_or_default()
            .join("\n"),
    )
}

/// The `op`s recorded for a row, oldest first.
fn ops(history: &Value) -> Vec<String> {
    history["mutations"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["op"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the table's gaps include one whose reason contains `needle`.
fn has_gap(history: &Value, needle: &str) -> bool {
    history["gaps"].as_array().is_some_and(|gaps| {
        gaps.iter()
            .any(|g| g["reason"].as_str().is_some_and(|r| r.contains(needle)))
    })
}

/// Roles that may write but not read, in every way a session changes its role: the
/// writes succeed (or fail with the server's own error) exactly as directly, are left
/// alone and recorded as gaps; writes by roles that may read are captured, also after a
/// rolled-back role change.
#[test]
fn role_switches_never_change_a_write() {
    let pair = Pair::new(
        "CREATE TABLE pt (a int PRIMARY KEY, b text);
         CREATE TABLE part (a int, b text) PARTITION BY LIST (a);
         CREATE TABLE part1 PARTITION OF part FOR VALUES IN (1);
         CREATE ROLE r_ins; GRANT INSERT, UPDATE ON pt, part TO r_ins;
         CREATE ROLE r_col; GRANT INSERT ON pt TO r_col; GRANT SELECT (a) ON pt TO r_col;
         CREATE ROLE r_all; GRANT ALL ON pt TO r_all;
         CREATE ROLE u_login LOGIN; GRANT INSERT ON pt TO u_login;",
    );
    let script = "
SET ROLE r_ins;
INSERT INTO pt VALUES (1, 'a');
UPDATE pt SET b = 'a2' WHERE a = 1;
INSERT INTO pt VALUES (1, 'dup');
INSERT INTO part VALUES (2, 'no partition');
RESET ROLE;
SET SESSION AUTHORIZATION u_login;
INSERT INTO pt VALUES (2, 'b');
RESET SESSION AUTHORIZATION;
BEGIN;
SET LOCAL ROLE r_ins;
INSERT INTO pt VALUES (3, 'c');
COMMIT;
INSERT INTO pt VALUES (4, 'd');
BEGIN;
SET ROLE r_ins;
ROLLBACK;
INSERT INTO pt VALUES (5, 'e');
SELECT set_config('role', 'r_ins', false);
INSERT INTO pt VALUES (6, 'f');
RESET ROLE;
SET ROLE r_col;
INSERT INTO pt VALUES (7, 'g');
INSERT INTO pt VALUES (7, 'dup');
RESET ROLE;
SET ROLE r_all;
INSERT INTO pt VALUES (8, 'h');
RESET ROLE;
BEGIN;
SAVEPOINT s;
SET ROLE r_ins;
ROLLBACK TO SAVEPOINT s;
INSERT INTO pt VALUES (9, 'i');
COMMIT;
SET ROLE r_ins; INSERT INTO pt VALUES (10, 'j'); RESET ROLE;
SELECT a, b FROM pt ORDER BY a;
";
    let transcript = pair.same_transcript(script);
    assert!(transcript.contains("duplicate key value"), "{transcript}");
    assert!(
        transcript.contains("no partition of relation"),
        "{transcript}"
    );
    // Written by roles without SELECT: untouched by capture, gaps instead.
    for id in ["1", "2", "3", "6", "7", "10"] {
        let h = pair.history("pt", id);
        assert!(ops(&h).is_empty(), "row {id} must not be imaged: {h}");
    }
    let h = pair.history("pt", "1");
    assert!(has_gap(&h, "role r_ins lacks SELECT"), "{h}");
    assert!(has_gap(&h, "role u_login lacks SELECT"), "{h}");
    assert!(has_gap(&h, "role r_col lacks SELECT"), "{h}");
    // Written as the login role, or a role that may read: captured.
    for id in ["4", "5", "8", "9"] {
        assert_eq!(ops(&pair.history("pt", id)), ["INSERT"], "row {id}");
    }
}

/// Tables with rules (conditional INSTEAD, ALSO, multi-action), views (auto-updatable
/// and with INSTEAD OF triggers) and foreign tables: what the write does is unchanged,
/// and the write is a gap; a plain table next to them is still captured.
#[test]
fn rules_views_and_foreign_tables_are_left_alone() {
    let pair = Pair::new(
        "CREATE TABLE t4 (a int PRIMARY KEY, b text);
         CREATE TABLE t5 (a int PRIMARY KEY, b text);
         CREATE RULE t4_ins AS ON INSERT TO t4 WHERE new.a >= 10 DO INSTEAD INSERT INTO t5 VALUES (new.a, new.b);
         CREATE TABLE logged (a int PRIMARY KEY, b text);
         CREATE TABLE log (what text);
         CREATE RULE logged_upd AS ON UPDATE TO logged DO ALSO INSERT INTO log VALUES ('updated ' || old.a);
         CREATE TABLE base (a int PRIMARY KEY, b text);
         CREATE VIEW v AS SELECT a, b FROM base;
         CREATE VIEW vt AS SELECT a, b FROM base;
         CREATE FUNCTION vt_ins() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO base VALUES (new.a, upper(new.b)); RETURN new; END $$;
         CREATE TRIGGER vt_ins INSTEAD OF INSERT ON vt FOR EACH ROW EXECUTE FUNCTION vt_ins();
         CREATE EXTENSION postgres_fdw;
         CREATE TABLE remote (a int PRIMARY KEY, b text);",
    );
    pair.each(|pg| {
        format!(
            "CREATE SERVER loop FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '{}', dbname '{DB}');
             CREATE USER MAPPING FOR {USER} SERVER loop OPTIONS (user '{USER}', password '{PASSWORD}');
             CREATE FOREIGN TABLE ft (a int, b text) SERVER loop OPTIONS (table_name 'remote');",
            pg.port
        )
    });
    let script = "
INSERT INTO t4 VALUES (1, 'kept'), (15, 'diverted');
INSERT INTO t4 VALUES (2, 'x') RETURNING *;
INSERT INTO logged VALUES (1, 'a');
UPDATE logged SET b = 'b' WHERE a = 1;
INSERT INTO v VALUES (1, 'via view');
UPDATE v SET b = 'updated via view' WHERE a = 1;
INSERT INTO vt VALUES (2, 'via trigger');
INSERT INTO ft VALUES (3, 'foreign');
UPDATE ft SET b = 'foreign2' WHERE a = 3 RETURNING a;
CREATE TABLE later (a int PRIMARY KEY);
INSERT INTO later VALUES (1);
CREATE RULE later_del AS ON DELETE TO later DO INSTEAD (DELETE FROM t5; DELETE FROM t4);
DELETE FROM later;
BEGIN;
CREATE RULE later_ins AS ON INSERT TO later DO INSTEAD NOTHING;
INSERT INTO later VALUES (2);
COMMIT;
INSERT INTO later VALUES (3);
SELECT * FROM t4 ORDER BY a;
SELECT * FROM t5 ORDER BY a;
SELECT * FROM log;
SELECT * FROM base ORDER BY a;
SELECT * FROM remote ORDER BY a;
SELECT * FROM later ORDER BY a;
";
    let transcript = pair.same_transcript(script);
    assert!(transcript.contains("diverted"), "{transcript}");
    // The app's own RETURNING on a table with a conditional rule fails directly too;
    // nothing else does.
    assert_eq!(transcript.matches("ERROR").count(), 1, "{transcript}");
    assert!(
        transcript.contains("cannot perform INSERT RETURNING"),
        "{transcript}"
    );
    let ruled = pair.history("t4", "1");
    assert!(ops(&ruled).is_empty(), "{ruled}");
    assert!(has_gap(&ruled, "rules"), "{ruled}");
    assert!(has_gap(&pair.history("logged", "1"), "rules"));
    assert!(has_gap(&pair.history("v", "1"), "a view"));
    assert!(has_gap(&pair.history("vt", "2"), "a view"));
    assert!(has_gap(&pair.history("ft", "3"), "a foreign table"));
    // The rule created inside a transaction kept the INSERT after it untouched; the one
    // before the rule and the one after the commit are what they are.
    assert_eq!(ops(&pair.history("later", "1")), ["INSERT"]);
    let later = pair.history("later", "2");
    assert!(ops(&later).is_empty(), "{later}");
    assert!(has_gap(&later, "not settled"), "{later}");
    // The rules' own target, written directly elsewhere, is captured as any table.
    assert!(
        ops(&pair.history("remote", "3")).is_empty(),
        "written by the foreign server"
    );
}

/// DML that sits inside another statement — rule actions, function bodies (quoted and
/// `BEGIN ATOMIC`), `DO`, `PREPARE … AS`, `EXPLAIN ANALYZE` — is never rewritten; where it
/// runs, the history says it was not captured.
#[test]
fn dml_inside_other_statements_is_never_rewritten() {
    let pair = Pair::new(
        "CREATE TABLE t (a int PRIMARY KEY, b text);
         CREATE TABLE audit (a int PRIMARY KEY);",
    );
    let script = "
CREATE FUNCTION add_quoted(x int) RETURNS void LANGUAGE sql AS $$ INSERT INTO t VALUES (x, 'quoted'); INSERT INTO audit VALUES (x) $$;
CREATE FUNCTION add_atomic(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (x, 'atomic'); INSERT INTO audit VALUES (x); SELECT CASE WHEN x > 0 THEN x END; END;
SELECT add_quoted(1);
SELECT add_atomic(2);
CREATE RULE t_del AS ON DELETE TO audit DO ALSO (UPDATE t SET b = 'audited' WHERE a = old.a; DELETE FROM t WHERE a = -1);
DO $$ BEGIN INSERT INTO t VALUES (3, 'do'); END $$;
PREPARE ins(int, text) AS INSERT INTO t VALUES ($1, $2);
EXECUTE ins(4, 'prepared');
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) INSERT INTO t VALUES (5, 'explained');
INSERT INTO t VALUES (6, 'plain'); INSERT INTO t VALUES (7, 'plain too');
SELECT * FROM t ORDER BY a;
";
    let transcript = pair.same_transcript(script);
    assert!(!transcript.contains("ERROR"), "{transcript}");
    let h = pair.history("t", "3");
    assert!(ops(&h).is_empty(), "{h}");
    assert!(has_gap(&h, "DO block"), "{h}");
    assert!(has_gap(&pair.history("t", "4"), "SQL-prepared write ins"));
    assert!(has_gap(&pair.history("t", "5"), "EXPLAIN ANALYZE"));
    for id in ["6", "7"] {
        assert_eq!(ops(&pair.history("t", id)), ["INSERT"], "row {id}");
    }
}
