//! A data dir written by the last release of schema version 3 (`fixtures/v3-store.tar`,
//! made by `fixtures/make-v3-store.sh` with flux at commit 44f62fa) is upgraded in place
//! when a writer opens it: its gaps and statements read back typed, nothing is lost, and
//! it keeps taking new records.

use flux_store::model::{GapReason, Record, StatementRecord};
use flux_store::{Store, StoreError, SCHEMA_VERSION};

const REQUEST: &str = "req-v3-upgrade-0001";

fn unpack() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let tar = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v3-store.tar");
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .arg("-xf")
        .arg(tar)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar -xf {tar}");
    std::fs::set_permissions(
        dir.path().join("store"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    dir
}

#[test]
fn a_version_3_store_is_upgraded_in_place_by_its_writer() {
    let dir = unpack();
    let path = dir.path().join("store");
    match Store::open_reader(&path) {
        Err(e @ StoreError::Schema { found: 3, .. }) => {
            assert!(e.to_string().contains("upgraded in place"), "{e}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a reader of version {SCHEMA_VERSION} read a version-3 store"),
    }
    let store = flux_read::open_writer(&path).expect("the writer upgrades it");

    // Statements: verb and row count from their tags, every one kept.
    let statements = store.request_statements(REQUEST).expect("statements");
    let shape: Vec<(Option<&str>, Option<u64>)> = statements
        .iter()
        .map(|s| (s.verb.as_deref(), s.rows))
        .collect();
    assert_eq!(
        shape,
        [
            (Some("insert"), Some(2)),
            (Some("update"), Some(1)),
            (Some("update"), Some(0)),
            (Some("insert"), Some(1)),
            (Some("update"), Some(1)),
            (Some("truncate"), None),
            (Some("select"), Some(1)),
            (Some("begin"), None),
            (Some("delete"), Some(1)),
            (Some("rollback"), None),
        ]
    );
    assert!(statements.iter().all(|s| s.tables.is_empty()));
    // Their spans were named when written, and keep those names.
    let tree = flux_read::trace(&store, REQUEST).expect("trace");
    let names: Vec<&str> = tree.nodes.iter().map(|n| n.span.name.as_str()).collect();
    assert!(names.contains(&"db.update(notes)"), "{names:?}");
    assert!(names.contains(&"db.truncate"), "{names:?}");

    // Gaps: the text as written, typed as such; partial ones still read as partial.
    let gaps = store.gaps(0, u64::MAX, None).expect("gaps");
    let texts: Vec<(String, bool)> = gaps
        .iter()
        .map(|g| match &g.reason {
            GapReason::Legacy(text) => (text.clone(), g.reason.partial()),
            other => panic!("an upgraded gap is Legacy, got {other:?}"),
        })
        .collect();
    assert!(
        texts.contains(&("TRUNCATE".to_string(), false)),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|(t, partial)| *partial && t.contains("no primary key")),
        "{texts:?}"
    );
    // Shown without the suffix the old text carried: the layout says "without a before
    // image" itself.
    for g in &gaps {
        let shown = flux_read::gap::Reason(&g.reason).to_string();
        assert!(!shown.contains("before image unavailable"), "{shown}");
    }

    // Row history is untouched, and the store takes new records.
    let users = store
        .history("users", &["1".into()], None, None)
        .expect("history");
    assert_eq!(users.len(), 2);
    store
        .write(
            &[Record::Statement(StatementRecord {
                request: REQUEST.into(),
                at: u64::MAX / 2,
                duration: 1,
                sql: "SELECT 1 FROM users".into(),
                tag: Some("SELECT 1".into()),
                sqlstate: None,
                error: None,
                parent_span: None,
                verb: Some("select".into()),
                tables: vec!["users".into()],
                rows: Some(1),
            })],
            true,
        )
        .expect("write after upgrade");
    drop(store);
    // Opened again (already upgraded), and by a reader.
    drop(flux_read::open_writer(&path).expect("reopen"));
    let reader = Store::open_reader(&path).expect("reader after upgrade");
    assert_eq!(reader.request_statements(REQUEST).expect("read").len(), 11);
    assert_eq!(
        reader.gaps(0, u64::MAX, None).expect("gaps").len(),
        gaps.len()
    );
}
