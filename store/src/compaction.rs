//! The compaction filters that drop what belongs to no request once it is older than the
//! retention floor (row changes no request tagged, transaction outcomes), and
//! deletion-triggered compaction so expired requests free their space ([`crate::retention`]
//! sets the floor).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rocksdb::compaction_filter::Decision;
use rocksdb::Options;
use serde::Deserialize;

use crate::keys;
use crate::layout::{MUTATIONS, TX};
use crate::model::Nanos;

/// Installs the compaction filters and deletion-triggered compaction on a family's options.
pub(crate) fn configure(family: &str, opts: &mut Options, floor: &Arc<AtomicU64>) {
    // A file whose tombstones make up a fifth of any 1,000 entries is compacted soon,
    // so expired requests free their space without a full compaction.
    opts.add_compact_on_deletion_collector_factory(1000, 200, 0.2);
    // Every file is rewritten at least daily, which runs the filters over old data.
    opts.set_periodic_compaction_seconds(24 * 3600);
    let floor = floor.clone();
    match family {
        MUTATIONS => opts.set_compaction_filter("flux-retention-untagged-rows", move |_, k, v| {
            let before = floor.load(Ordering::Relaxed);
            // Tagged rows go with their request (a pass), never on their own.
            if before > 0 && mutation_at(k).is_some_and(|at| at < before) && !tagged(v) {
                Decision::Remove
            } else {
                Decision::Keep
            }
        }),
        TX => opts.set_compaction_filter("flux-retention-outcomes", move |_, _, v| {
            let before = floor.load(Ordering::Relaxed);
            match postcard::from_bytes::<TxHead>(v) {
                Ok(TxHead::Tx(_, at)) if before > 0 && at < before => Decision::Remove,
                _ => Decision::Keep,
            }
        }),
        _ => {}
    }
}

/// When a row change happened, from its `mutations` key (`…, at, seq`).
fn mutation_at(key: &[u8]) -> Option<Nanos> {
    let at = key.len().checked_sub(16)?;
    keys::take_u64(key.get(at..)?).map(|(at, _)| at)
}

/// The leading fields of a stored `Record::Mutation`, borrowed (images are not copied).
#[derive(Deserialize)]
#[allow(dead_code)] // fields are read only to reach `request`
enum MutationHead<'a> {
    Mutation {
        table: &'a str,
        key: Option<Vec<&'a str>>,
        at: u64,
        op: u32,
        before: Option<&'a str>,
        after: Option<&'a str>,
        request: Option<&'a str>,
    },
}

/// Whether a stored row change names a request (undecodable: keep it, as tagged).
fn tagged(value: &[u8]) -> bool {
    match postcard::take_from_bytes::<MutationHead>(value) {
        Ok((MutationHead::Mutation { request, .. }, _)) => request.is_some(),
        Err(_) => true,
    }
}

/// The leading fields of a stored `Record::Tx` (variant 1: `Mutation` is 0).
#[derive(Deserialize)]
#[allow(dead_code)] // the transaction id is read only to reach `at`
enum TxHead {
    Mutation,
    Tx((u64, u64, u64), u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mutation, Op, Record, TxEvent, TxId, TxRecord};

    fn mutation(request: Option<&str>) -> Record {
        Record::Mutation(Mutation {
            table: "public.users".into(),
            key: Some(vec!["1".into()]),
            at: 42,
            op: Op::Update,
            before: Some("{\"id\":1}".into()),
            after: Some("{\"id\":1}".into()),
            request: request.map(Into::into),
            tx: TxId {
                boot: 1,
                session: 2,
                n: 3,
            },
            tx_index: 0,
        })
    }

    #[test]
    fn the_filters_read_the_fields_they_need_from_stored_records() {
        let tagged_row = postcard::to_stdvec(&mutation(Some("req"))).unwrap();
        let untagged_row = postcard::to_stdvec(&mutation(None)).unwrap();
        assert!(tagged(&tagged_row));
        assert!(!tagged(&untagged_row));
        assert!(tagged(b"\xff garbage"), "undecodable records are kept");
        let tx = postcard::to_stdvec(&Record::Tx(TxRecord {
            tx: TxId {
                boot: 1,
                session: 2,
                n: 3,
            },
            at: 77,
            event: TxEvent::Committed,
        }))
        .unwrap();
        assert!(matches!(
            postcard::from_bytes::<TxHead>(&tx),
            Ok(TxHead::Tx((1, 2, 3), 77))
        ));
        let mut key = vec![9, 9];
        keys::put_u64(&mut key, 1234);
        keys::put_u64(&mut key, 5);
        assert_eq!(mutation_at(&key), Some(1234));
        assert_eq!(mutation_at(&[1, 2]), None);
    }
}
