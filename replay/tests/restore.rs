//! The scratch restore against a real PostgreSQL, from a record real capture made: rows
//! inserted, updated, deleted and rolled back in the window go back to their committed
//! state at its start; rows of requests not selected, and changes before the window, stay.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flux_integration_tests::pg::{connect, Options, PgCluster, DB, PASSWORD, USER};
use flux_proxy::{EventSink, Proxy, ProxyConfig};
use flux_recorder::StoreSink;
use flux_replay::restore;
use flux_store::{Durability, Writer, WriterConfig};
use tokio_util::sync::CancellationToken;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

async fn rows(c: &tokio_postgres::Client) -> Vec<(i32, String)> {
    c.query("SELECT id, plan FROM users ORDER BY id", &[])
        .await
        .expect("select")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_in_the_window_return_to_their_state_at_its_start() {
    let pg = PgCluster::start(Options::default());
    pg.admin_sql(
        "CREATE TABLE users (id int PRIMARY KEY, plan text NOT NULL, n int GENERATED ALWAYS AS (id * 2) STORED);
         CREATE TABLE accounts (id int PRIMARY KEY, owner int NOT NULL REFERENCES users(id));
         INSERT INTO users (id, plan) VALUES (1, 'free'), (2, 'free'), (3, 'free'), (4, 'free');",
    );

    // flux proxy with capture, recording into a real store.
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(flux_read::open_writer(dir.path()).expect("store"));
    let writer = Writer::start(store.clone(), WriterConfig::default());
    let sink = Arc::new(StoreSink::new(writer.handle(), Durability::Relaxed));
    let config = ProxyConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        pg.url().parse().expect("upstream"),
    );
    let proxy = Proxy::bind(config, Some(sink as Arc<dyn EventSink>))
        .await
        .expect("bind");
    let addr = proxy.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(proxy.run(shutdown.clone()));
    let c = connect(&format!(
        "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname={DB}",
        addr.port()
    ))
    .await;

    // Before the window: a committed change the restore must keep.
    c.batch_execute("UPDATE users SET plan = 'basic' WHERE id = 4 /*request_id='early'*/")
        .await
        .expect("early");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let start = now();
    // A: insert (and a row referencing it), update, delete — committed.
    c.batch_execute(
        "BEGIN;
         SET LOCAL flux.request_id = 'A';
         INSERT INTO users (id, plan) VALUES (10, 'trial');
         INSERT INTO accounts VALUES (100, 10);
         UPDATE users SET plan = 'pro' WHERE id = 1;
         DELETE FROM users WHERE id = 2;
         COMMIT;",
    )
    .await
    .expect("A");
    // B: an update rolled back.
    c.batch_execute(
        "BEGIN;
         SET LOCAL flux.request_id = 'B';
         UPDATE users SET plan = 'gold' WHERE id = 3;
         ROLLBACK;",
    )
    .await
    .expect("B");
    // C, not selected: changes 4 again.
    c.batch_execute("UPDATE users SET plan = 'enterprise' WHERE id = 4 /*request_id='C'*/")
        .await
        .expect("C");
    // The app goes on: the rolled-back row changed again later, by C.
    c.batch_execute("UPDATE users SET plan = 'later' WHERE id = 3 /*request_id='C'*/")
        .await
        .expect("C2");
    drop(c);
    shutdown.cancel();
    running.await.expect("proxy");
    writer.stop();

    let plan = restore::plan(&store, &["A".to_string(), "B".to_string()], start).expect("plan");
    assert!(plan.not_restored.is_empty(), "{:?}", plan.not_restored);
    let tables: Vec<(&str, &str)> = plan
        .rows
        .iter()
        .map(|r| (r.table.as_str(), r.key[0].as_str()))
        .collect();
    assert_eq!(
        tables,
        [
            ("accounts", "100"),
            ("users", "1"),
            ("users", "10"),
            ("users", "2"),
            ("users", "3")
        ]
    );

    // The scratch database: the state after the requests (here, the same cluster).
    let mut scratch = pg.connect().await;
    assert_eq!(
        rows(&scratch).await,
        [
            (1, "pro".to_string()),
            (3, "later".to_string()),
            (4, "enterprise".to_string()),
            (10, "trial".to_string())
        ]
    );
    let applied = restore::apply(&mut scratch, &plan).await.expect("restore");
    assert_eq!(
        applied,
        restore::Applied {
            restored: 3,
            removed: 2,
            triggers_off: true
        }
    );
    assert_eq!(
        rows(&scratch).await,
        [
            (1, "free".to_string()),
            (2, "free".to_string()),
            (3, "free".to_string()),
            (4, "enterprise".to_string()),
        ],
        "1 and 2 back to their start, 3's rolled-back attempt undone by its before image, \
         10 gone, 4 (not selected) untouched"
    );
    let generated: i32 = scratch
        .query_one("SELECT n FROM users WHERE id = 2", &[])
        .await
        .expect("n")
        .get(0);
    assert_eq!(
        generated, 4,
        "generated columns are computed again, not copied"
    );
    let accounts: i64 = scratch
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(accounts, 0);
}
