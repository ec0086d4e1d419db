//! What the store holds, per family: size, record count, oldest and newest record times
//! (`flux store stats`).

use rocksdb::IteratorMode;
use serde::Serialize;

use crate::db::{
    Store, StoreError, EXCHANGES, FAMILIES, GAPS, META, MUTATIONS, MUTATIONS_BY_REQUEST, REQUESTS,
    REQUESTS_BY_TIME, SPANS, STATEMENTS, TX,
};
use crate::keys;
use crate::model::{Nanos, Record};

/// One column family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FamilyStats {
    /// Its name.
    pub family: String,
    /// Bytes of its tables on disk.
    pub table_bytes: u64,
    /// Bytes in memory not yet flushed to tables (they are in the WAL).
    pub memtable_bytes: u64,
    /// Records, as RocksDB estimates them.
    pub records: u64,
    /// The oldest record's time (ns since the epoch), where records have one.
    pub oldest: Option<Nanos>,
    /// The newest record's time.
    pub newest: Option<Nanos>,
    /// What the times are: `request start` for families keyed by request, else `record`.
    pub time_of: &'static str,
}

impl Store {
    /// Per-family sizes and time ranges. Families keyed by time read their first and last
    /// keys; families keyed by request take their requests' start times (retention
    /// removes a request whole); row changes and outcomes are scanned.
    pub fn family_stats(&self) -> Result<Vec<FamilyStats>, StoreError> {
        let requests = self.first_last_time(REQUESTS_BY_TIME)?;
        let mut out = Vec::new();
        for family in FAMILIES {
            let (range, time_of) = match family {
                META => ((None, None), "record"),
                GAPS => (self.first_last_time(GAPS)?, "record"),
                MUTATIONS => (self.scan_times(MUTATIONS)?, "record"),
                TX => (self.scan_times(TX)?, "record"),
                REQUESTS | REQUESTS_BY_TIME | SPANS | STATEMENTS | MUTATIONS_BY_REQUEST
                | EXCHANGES => (requests, "request start"),
                _ => ((None, None), "record"),
            };
            let prop = |name: &str| self.int_property(family, name);
            let records = prop("rocksdb.estimate-num-keys");
            // An empty family holds no request's records, whatever the requests' times.
            let range = if records == 0 { (None, None) } else { range };
            out.push(FamilyStats {
                family: family.to_string(),
                table_bytes: prop("rocksdb.total-sst-files-size"),
                memtable_bytes: prop("rocksdb.cur-size-all-mem-tables"),
                records,
                oldest: range.0,
                newest: range.1,
                time_of,
            });
        }
        Ok(out)
    }

    /// The times in the first and last keys of a family whose keys start with one.
    fn first_last_time(&self, family: &str) -> Result<(Option<Nanos>, Option<Nanos>), StoreError> {
        let time = |mode| match self.db.iterator_cf(self.cf(family), mode).next() {
            None => Ok(None),
            Some(Err(e)) => Err(self.rocks(e)),
            Some(Ok((k, _))) => Ok(keys::take_u64(&k).map(|(at, _)| at)),
        };
        Ok((time(IteratorMode::Start)?, time(IteratorMode::End)?))
    }

    /// The oldest and newest record times of a family keyed otherwise, by reading it all.
    fn scan_times(&self, family: &str) -> Result<(Option<Nanos>, Option<Nanos>), StoreError> {
        let (mut oldest, mut newest) = (None::<Nanos>, None::<Nanos>);
        for entry in self.db.iterator_cf(self.cf(family), IteratorMode::Start) {
            let (_, v) = entry.map_err(|e| self.rocks(e))?;
            let at = match self.decode::<Record>(&v, "record")? {
                Record::Mutation(m) => m.at,
                Record::Tx(t) => t.at,
                _ => continue,
            };
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
            newest = Some(newest.map_or(at, |n| n.max(at)));
        }
        Ok((oldest, newest))
    }
}
