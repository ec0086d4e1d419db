//! Transaction outcomes as capture reports them, against a real PostgreSQL: autocommit,
//! explicit, failed, `COMMIT` of a failed transaction, savepoints, errors inside an
//! extended-protocol pipeline, and a connection lost mid-transaction.

use std::time::Duration;

use flux_integration_tests::pg::{Options, PgCluster, DB, USER};
use flux_integration_tests::proxy::TestProxy;
use flux_integration_tests::wire::{fe, RawConn};
use flux_proxy::capture::{CaptureEvent, TxOutcome};

/// What the proxy reported, per inserted id: the outcome of its transaction, resolved
/// the way the store resolves it (savepoint rollbacks first, then the transaction's end).
fn outcomes(events: &[CaptureEvent]) -> Vec<(i64, &'static str)> {
    let mut rows = Vec::new();
    for e in events {
        if let CaptureEvent::Mutation(m) = e {
            let id = m
                .key
                .as_ref()
                .and_then(|k| k.first())
                .and_then(|k| k.parse().ok())
                .unwrap_or(-1);
            let mut outcome = "pending";
            for later in events {
                match later {
                    CaptureEvent::RolledBackTo {
                        session,
                        tx,
                        from,
                        to,
                        ..
                    } if *session == m.session
                        && *tx == m.tx
                        && (*from..*to).contains(&m.tx_index) =>
                    {
                        outcome = "rolled back";
                        break;
                    }
                    CaptureEvent::TxEnded {
                        session,
                        tx,
                        outcome: o,
                        ..
                    } if *session == m.session && *tx == m.tx => {
                        outcome = match o {
                            TxOutcome::Committed => "committed",
                            TxOutcome::RolledBack => "rolled back",
                            TxOutcome::Unknown => "unknown",
                        };
                    }
                    _ => {}
                }
            }
            rows.push((id, outcome));
        }
    }
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_a_transaction_ends() {
    let pg = PgCluster::start(Options::default());
    pg.admin_sql("create table t(id bigint primary key, note text)");
    let proxy = TestProxy::start(&pg).await;
    let mut c = RawConn::connect(proxy.addr, USER, DB).await;
    let q = |sql: &str| fe::query(sql);
    let exchanges: Vec<(Vec<bytes::Bytes>, usize)> = vec![
        // Autocommit, and a simple query whose second statement fails (one implicit
        // transaction: both roll back).
        (vec![q("insert into t values (1)")], 1),
        (
            vec![q("insert into t values (2); insert into t values (1)")],
            1,
        ),
        // Explicit, committed; explicit, rolled back.
        (vec![q("begin; insert into t values (3); commit")], 1),
        (
            vec![q("begin"), q("insert into t values (4)"), q("rollback")],
            3,
        ),
        // A failed transaction's COMMIT answers ROLLBACK.
        (
            vec![
                q("begin"),
                q("insert into t values (5)"),
                q("select 1/0"),
                q("commit"),
            ],
            4,
        ),
        // Savepoints: 7 is rolled back to s, 6 and 8 commit.
        (
            vec![q(
                "begin; insert into t values (6); savepoint s; insert into t values (7); \
                 rollback to savepoint s; insert into t values (8); commit",
            )],
            1,
        ),
        // Extended protocol: an error inside a pipeline rolls back the batch up to Sync;
        // the next batch commits on its own.
        (
            vec![
                fe::parse("ins", "insert into t values ($1)"),
                fe::bind("", "ins", &[Some(b"9")], false),
                fe::execute("", 0),
                fe::bind("", "ins", &[Some(b"9")], false),
                fe::execute("", 0),
                fe::sync(),
                fe::bind("", "ins", &[Some(b"10")], false),
                fe::execute("", 0),
                fe::sync(),
            ],
            2,
        ),
    ];
    for (send, ready) in exchanges {
        c.send(&fe::batch(&send)).await;
        c.until_ready(ready).await;
    }
    // Connection lost mid-transaction: the client vanishes after its insert was answered.
    c.send(&fe::batch(&[q("begin"), q("insert into t values (11)")]))
        .await;
    c.until_ready(2).await;
    drop(c);
    proxy.assert_drains().await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let events = proxy.events.all();
    assert_eq!(
        outcomes(&events),
        [
            (1, "committed"),
            (2, "rolled back"),
            (3, "committed"),
            (4, "rolled back"),
            (5, "rolled back"),
            (6, "committed"),
            (7, "rolled back"),
            (8, "committed"),
            (9, "rolled back"),
            (10, "committed"),
            (11, "rolled back"),
        ]
    );
    // The database agrees.
    let direct = pg.connect().await;
    let ids: Vec<i64> = direct
        .query("select id from t order by id", &[])
        .await
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [1, 3, 6, 8, 10]);
    proxy.stop().await;
}
