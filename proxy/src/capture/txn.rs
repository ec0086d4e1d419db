//! Transactions and request ids, as the server's answers reveal them.
//!
//! The tracker is driven from the response side, in the order the server executed things:
//! each statement's completion (with what the session planned for it), each row image, and
//! each `ReadyForQuery` status. Every captured row belongs to a transaction — explicit
//! (`BEGIN … COMMIT`) or the implicit one of a simple query or of an extended batch up to
//! `Sync` — whose outcome it reports once, as its own event:
//!
//! - `COMMIT` answered `COMMIT` → committed; answered `ROLLBACK` (the transaction had
//!   failed) → rolled back; `ROLLBACK` → rolled back;
//! - `ReadyForQuery` `I` with an implicit transaction open → committed unless a statement
//!   in it failed;
//! - `ROLLBACK TO SAVEPOINT` → the writes since the savepoint are rolled back;
//! - the connection lost → rolled back, or unknown if the server still owed answers
//!   (a `COMMIT` may have happened).
//!
//! Request ids resolve per statement: its sqlcommenter comment, else `SET LOCAL` /
//! `set_config(…, true)` in the current transaction, else the session's `SET`.

use std::time::SystemTime;

use crate::capture::analysis::{Kind, WriteOp};
use crate::capture::event::{CaptureEvent, MutationEvent, Op, SessionId, TxOutcome};
use crate::capture::plan::{key_of, CapturePlan, Images, StepPlan};
use crate::capture::request_id::SetRequest;
use crate::capture::role::{RoleState, Saved};

#[derive(Debug)]
struct OpenTx {
    n: u64,
    /// Writes captured so far; the next write's `tx_index`.
    writes: u32,
    failed: bool,
    /// Name, writes before it, role state at it.
    savepoints: Vec<(String, u32, Saved)>,
    local_request: Option<String>,
    /// The role state when the transaction began, restored if it rolls back.
    roles_at_start: Saved,
}

/// Per-session transaction, request-id and role state.
#[derive(Debug)]
pub struct Tracker {
    session: SessionId,
    next_tx: u64,
    open: Option<OpenTx>,
    session_request: Option<String>,
    roles: RoleState,
}

impl Tracker {
    /// A session outside any transaction, logged in as `login`.
    pub fn new(session: SessionId, login: &str) -> Self {
        Self {
            session,
            next_tx: 1,
            open: None,
            session_request: None,
            roles: RoleState::new(login),
        }
    }

    /// The session's role state, as the server confirmed it.
    pub fn roles(&self) -> &RoleState {
        &self.roles
    }

    fn tx(&mut self) -> &mut OpenTx {
        let next = &mut self.next_tx;
        let roles = &self.roles;
        self.open.get_or_insert_with(|| {
            let n = *next;
            *next += 1;
            OpenTx {
                n,
                writes: 0,
                failed: false,
                savepoints: Vec::new(),
                local_request: None,
                roles_at_start: roles.save(),
            }
        })
    }

    /// The request id in force for a statement.
    pub fn request_for(&self, step: &StepPlan) -> Option<String> {
        step.request_id
            .clone()
            .or_else(|| self.open.as_ref().and_then(|t| t.local_request.clone()))
            .or_else(|| self.session_request.clone())
    }

    /// A row image of a rewritten statement arrived.
    pub fn on_row(
        &mut self,
        step: &StepPlan,
        plan: &CapturePlan,
        table: String,
        images: Images,
    ) -> CaptureEvent {
        let request = self.request_for(step);
        let op = match (plan.op, &images.before) {
            (WriteOp::Insert, _) => Op::Insert,
            (WriteOp::Update, _) => Op::Update,
            (WriteOp::Delete, _) => Op::Delete,
            (WriteOp::Upsert, None) => Op::Insert,
            (WriteOp::Upsert, Some(_)) => Op::Update,
        };
        let key = images
            .after
            .as_deref()
            .or(images.before.as_deref())
            .and_then(|image| key_of(image, &plan.pk));
        let session = self.session;
        let tx = self.tx();
        let tx_index = tx.writes;
        tx.writes += 1;
        CaptureEvent::Mutation(MutationEvent {
            session,
            tx: tx.n,
            tx_index,
            at: SystemTime::now(),
            table,
            key,
            op,
            before: images.before,
            after: images.after,
            request,
        })
    }

    /// A statement finished: `tag` is its `CommandComplete` tag, `None` when it failed.
    pub fn on_completion(
        &mut self,
        step: &StepPlan,
        tag: Option<&str>,
        out: &mut Vec<CaptureEvent>,
    ) {
        let Some(tag) = tag else {
            if let Some(tx) = &mut self.open {
                tx.failed = true;
            }
            return;
        };
        let now = SystemTime::now();
        // 0 stands for "not said" in gap counts.
        let rows = flux_record::tag_rows(tag).unwrap_or(0);
        if let Some(gap) = &step.gap {
            out.push(CaptureEvent::Gap {
                session: self.session,
                at: now,
                table: gap.table.clone(),
                count: rows,
                reason: gap.reason.clone(),
                request: self.request_for(step),
            });
        }
        if let Some(note) = step.capture.as_ref().and_then(|c| c.before_note.as_ref()) {
            if rows > 0 {
                out.push(CaptureEvent::Gap {
                    session: self.session,
                    at: now,
                    table: step.capture.as_ref().map(|c| c.table.clone()),
                    count: rows,
                    reason: note.clone(),
                    request: self.request_for(step),
                });
            }
        }
        if let Some(capture) = &step.capture {
            if rows > 0 {
                for (table, why) in &capture.unseen {
                    out.push(CaptureEvent::Gap {
                        session: self.session,
                        at: now,
                        table: table.clone(),
                        count: 0,
                        reason: why.clone(),
                        request: self.request_for(step),
                    });
                }
            }
        }
        if let Some(set) = &step.set_request {
            self.apply(set);
        }
        if let Some(change) = &step.role {
            // Opened first, so a rollback restores the state from before the change.
            self.tx();
            self.roles.apply(change);
        }
        match &step.kind {
            Kind::Begin => {
                self.tx();
            }
            Kind::Commit => {
                let outcome = if tag == "COMMIT" {
                    TxOutcome::Committed
                } else {
                    TxOutcome::RolledBack
                };
                self.end(outcome, out);
            }
            Kind::Rollback => self.end(TxOutcome::RolledBack, out),
            Kind::Savepoint(name) => {
                let tx = self.tx();
                let at = tx.writes;
                let saved = self.roles.save();
                let tx = self.tx();
                tx.savepoints.push((name.clone(), at, saved));
            }
            Kind::Release(name) => {
                if let Some(tx) = &mut self.open {
                    if let Some(i) = tx.savepoints.iter().rposition(|(n, ..)| n == name) {
                        tx.savepoints.truncate(i);
                    }
                }
            }
            Kind::RollbackTo(name) => {
                let session = self.session;
                if let Some(tx) = &mut self.open {
                    if let Some(i) = tx.savepoints.iter().rposition(|(n, ..)| n == name) {
                        let from = tx.savepoints.get(i).map_or(0, |(_, at, _)| *at);
                        if let Some((.., saved)) = tx.savepoints.get(i) {
                            self.roles.restore(saved);
                        }
                        tx.savepoints.truncate(i + 1);
                        tx.failed = false;
                        if tx.writes > from {
                            out.push(CaptureEvent::RolledBackTo {
                                session,
                                tx: tx.n,
                                at: now,
                                from,
                                to: tx.writes,
                            });
                        }
                    }
                }
            }
            Kind::SetRequest(set) => self.apply(set),
            Kind::DiscardAll => self.session_request = None,
            _ => {}
        }
    }

    fn apply(&mut self, set: &SetRequest) {
        if set.local {
            self.tx().local_request = set.value.clone();
        } else {
            self.session_request = set.value.clone();
            if let Some(tx) = &mut self.open {
                tx.local_request = None;
            }
        }
    }

    fn end(&mut self, outcome: TxOutcome, out: &mut Vec<CaptureEvent>) {
        if let Some(tx) = self.open.take() {
            match outcome {
                TxOutcome::Committed => self.roles.end_transaction(),
                TxOutcome::RolledBack | TxOutcome::Unknown => {
                    self.roles.restore(&tx.roles_at_start)
                }
            }
            if tx.writes > 0 {
                out.push(CaptureEvent::TxEnded {
                    session: self.session,
                    tx: tx.n,
                    at: SystemTime::now(),
                    outcome,
                });
            }
        }
    }

    /// `ReadyForQuery` with transaction status `I`, `T` or `E`.
    pub fn on_ready(&mut self, status: u8, out: &mut Vec<CaptureEvent>) {
        match status {
            b'I' => {
                let outcome = match &self.open {
                    Some(tx) if tx.failed => TxOutcome::RolledBack,
                    _ => TxOutcome::Committed,
                };
                self.end(outcome, out);
            }
            b'E' => self.tx().failed = true,
            _ => {
                self.tx();
            }
        }
    }

    /// The connection ended. `in_flight`: the server still owed answers, so the open
    /// transaction may have committed.
    pub fn on_lost(&mut self, in_flight: bool, out: &mut Vec<CaptureEvent>) {
        let outcome = match &self.open {
            Some(tx) if !tx.failed && in_flight => TxOutcome::Unknown,
            _ => TxOutcome::RolledBack,
        };
        self.end(outcome, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::analysis::WriteOp;
    use std::sync::Arc;

    fn step(kind: Kind) -> StepPlan {
        StepPlan {
            text: 0..0,
            kind,
            request_id: None,
            set_request: None,
            role: None,
            capture: None,
            gap: None,
            verb: None,
            tables: Vec::new(),
        }
    }

    fn write() -> (StepPlan, Arc<CapturePlan>) {
        let plan = Arc::new(CapturePlan {
            table: "users".into(),
            oid: 10,
            pk: vec!["id".into()],
            op: WriteOp::Upsert,
            keep_returning: false,
            before_note: None,
            unseen: Vec::new(),
        });
        let mut s = step(Kind::Other);
        s.capture = Some(plan.clone());
        (s, plan)
    }

    fn row(t: &mut Tracker, s: &StepPlan, p: &CapturePlan, id: u32) -> MutationEvent {
        let images = Images {
            before: None,
            after: Some(format!(r#"{{"id": {id}}}"#)),
            oid: None,
        };
        match t.on_row(s, p, "users".into(), images) {
            CaptureEvent::Mutation(m) => m,
            other => panic!("{other:?}"),
        }
    }

    fn outcomes(events: &[CaptureEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                CaptureEvent::TxEnded { tx, outcome, .. } => format!("{tx}:{outcome:?}"),
                CaptureEvent::RolledBackTo { tx, from, to, .. } => format!("{tx}:{from}..{to}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn autocommit_explicit_failed_and_savepoints() {
        let mut t = Tracker::new(1, "app");
        let mut out = Vec::new();
        let (w, p) = write();
        // Autocommit write.
        let m = row(&mut t, &w, &p, 1);
        assert_eq!((m.tx, m.tx_index, m.op), (1, 0, Op::Insert));
        assert_eq!(m.key, Some(vec!["1".to_string()]));
        t.on_completion(&w, Some("INSERT 0 1"), &mut out);
        t.on_ready(b'I', &mut out);
        // Explicit, with a savepoint rolled back to, then committed.
        t.on_completion(&step(Kind::Begin), Some("BEGIN"), &mut out);
        t.on_ready(b'T', &mut out);
        row(&mut t, &w, &p, 2);
        t.on_completion(
            &step(Kind::Savepoint("s".into())),
            Some("SAVEPOINT"),
            &mut out,
        );
        row(&mut t, &w, &p, 3);
        t.on_completion(
            &step(Kind::RollbackTo("s".into())),
            Some("ROLLBACK"),
            &mut out,
        );
        row(&mut t, &w, &p, 4);
        t.on_completion(&step(Kind::Commit), Some("COMMIT"), &mut out);
        t.on_ready(b'I', &mut out);
        // Failed explicit transaction whose COMMIT answers ROLLBACK.
        t.on_completion(&step(Kind::Begin), Some("BEGIN"), &mut out);
        row(&mut t, &w, &p, 5);
        t.on_completion(&w, None, &mut out);
        t.on_ready(b'E', &mut out);
        t.on_completion(&step(Kind::Commit), Some("ROLLBACK"), &mut out);
        // Implicit transaction with an error.
        row(&mut t, &w, &p, 6);
        t.on_completion(&w, None, &mut out);
        t.on_ready(b'I', &mut out);
        // Lost mid-flight.
        row(&mut t, &w, &p, 7);
        t.on_lost(true, &mut out);
        assert_eq!(
            outcomes(&out),
            [
                "1:Committed",
                "2:1..2",
                "2:Committed",
                "3:RolledBack",
                "4:RolledBack",
                "5:Unknown"
            ]
        );
    }

    #[test]
    fn request_ids_resolve_comment_then_local_then_session() {
        let mut t = Tracker::new(1, "app");
        let mut out = Vec::new();
        let set = |local, v: &str| {
            step(Kind::SetRequest(SetRequest {
                local,
                value: Some(v.into()),
                param: None,
            }))
        };
        t.on_completion(&set(false, "sess"), Some("SET"), &mut out);
        let (mut w, _) = write();
        assert_eq!(t.request_for(&w).as_deref(), Some("sess"));
        t.on_completion(&step(Kind::Begin), Some("BEGIN"), &mut out);
        t.on_completion(&set(true, "local"), Some("SET"), &mut out);
        assert_eq!(t.request_for(&w).as_deref(), Some("local"));
        w.request_id = Some("comment".into());
        assert_eq!(t.request_for(&w).as_deref(), Some("comment"));
        w.request_id = None;
        t.on_completion(&step(Kind::Commit), Some("COMMIT"), &mut out);
        assert_eq!(t.request_for(&w).as_deref(), Some("sess"));
        t.on_completion(&step(Kind::DiscardAll), Some("DISCARD ALL"), &mut out);
        assert_eq!(t.request_for(&w), None);
    }

    #[test]
    fn role_changes_follow_transactions() {
        use crate::capture::role::RoleChange;
        let mut t = Tracker::new(1, "app");
        let mut out = Vec::new();
        let mut set_role = step(Kind::Other);
        set_role.role = Some(RoleChange::Role {
            local: false,
            to: Some("r1".into()),
        });
        // BEGIN; SET ROLE r1; ROLLBACK → app.
        t.on_completion(&step(Kind::Begin), Some("BEGIN"), &mut out);
        t.on_completion(&set_role, Some("SET"), &mut out);
        assert_eq!(t.roles().effective(), Some("r1"));
        t.on_completion(&step(Kind::Rollback), Some("ROLLBACK"), &mut out);
        assert_eq!(t.roles().effective(), Some("app"));
        // SET ROLE r1 in autocommit sticks.
        t.on_completion(&set_role, Some("SET"), &mut out);
        t.on_ready(b'I', &mut out);
        assert_eq!(t.roles().effective(), Some("r1"));
        // A failed SET changes nothing.
        let mut reset = step(Kind::Other);
        reset.role = Some(RoleChange::Role {
            local: false,
            to: None,
        });
        t.on_completion(&reset, None, &mut out);
        t.on_ready(b'I', &mut out);
        assert_eq!(t.roles().effective(), Some("r1"));
        // BEGIN; SAVEPOINT s; RESET ROLE; ROLLBACK TO s; COMMIT → r1.
        t.on_completion(&step(Kind::Begin), Some("BEGIN"), &mut out);
        t.on_completion(
            &step(Kind::Savepoint("s".into())),
            Some("SAVEPOINT"),
            &mut out,
        );
        t.on_completion(&reset, Some("RESET"), &mut out);
        assert_eq!(t.roles().effective(), Some("app"));
        t.on_completion(
            &step(Kind::RollbackTo("s".into())),
            Some("ROLLBACK"),
            &mut out,
        );
        t.on_completion(&step(Kind::Commit), Some("COMMIT"), &mut out);
        assert_eq!(t.roles().effective(), Some("r1"));
    }
}
