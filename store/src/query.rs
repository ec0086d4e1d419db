//! A row's history and a request's changes, each change with its fate (resolved from its
//! transaction's records). What they mean (blame, reverts) is `flux-read`'s.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::db::{Store, StoreError};
use crate::model::{Mutation, Nanos, Outcome, TxId};

/// A mutation and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    /// The change as captured.
    #[serde(flatten)]
    pub mutation: MutationView,
    /// Its fate.
    pub outcome: Outcome,
}

/// A mutation with its images parsed, for rendering and JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct MutationView {
    /// Table.
    pub table: String,
    /// Primary-key values as text.
    pub key: Option<Vec<String>>,
    /// When (ns since the epoch).
    pub at: Nanos,
    /// `INSERT`, `UPDATE`, `DELETE`.
    pub op: &'static str,
    /// Row before (absent for inserts and where it could not be captured).
    pub before: Option<Value>,
    /// Row after (absent for deletes).
    pub after: Option<Value>,
    /// Request id, if tagged.
    pub request: Option<String>,
    /// Transaction.
    #[serde(skip)]
    pub tx: TxId,
}

impl From<Mutation> for MutationView {
    fn from(m: Mutation) -> Self {
        let parse =
            |s: Option<String>| s.map(|s| serde_json::from_str(&s).unwrap_or(Value::String(s)));
        MutationView {
            table: m.table,
            key: m.key,
            at: m.at,
            op: m.op.as_str(),
            before: parse(m.before),
            after: parse(m.after),
            request: m.request,
            tx: m.tx,
        }
    }
}

impl Store {
    fn resolve(&self, mutations: Vec<Mutation>) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut events = HashMap::new();
        let mut out = Vec::with_capacity(mutations.len());
        for m in mutations {
            if let std::collections::hash_map::Entry::Vacant(slot) = events.entry(m.tx) {
                slot.insert(self.tx_events(&m.tx)?);
            }
            let outcome =
                Outcome::resolve(m.tx_index, events.get(&m.tx).map_or(&[][..], Vec::as_slice));
            out.push(HistoryEntry {
                mutation: m.into(),
                outcome,
            });
        }
        Ok(out)
    }

    /// One row's history, oldest first, with each change's outcome.
    pub fn history(
        &self,
        table: &str,
        key: &[String],
        from: Option<Nanos>,
        to: Option<Nanos>,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let mutations = self.row_mutations(table, key, from, to)?;
        self.resolve(mutations)
    }

    /// Every row a request changed, in order, with outcomes.
    pub fn request_history(&self, request: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let mutations = self.request_mutations(request)?;
        self.resolve(mutations)
    }
}
