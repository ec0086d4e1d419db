//! The session's effective role, which decides whether capture may read a written row back.
//!
//! `RETURNING` needs SELECT on the target, so a write by a role that may INSERT but not
//! SELECT must be left alone. The role changes with `SET [LOCAL] ROLE`, `SET SESSION
//! AUTHORIZATION`, their `RESET`s, `set_config('role', …)` and `DISCARD ALL`, and these
//! follow transaction rules: a `SET` in a transaction that rolls back (or before a
//! `ROLLBACK TO SAVEPOINT`) is undone, a `SET LOCAL` lasts until the transaction ends.
//!
//! Two views are kept. [`RoleState`] is exact: the response side applies each role
//! change once the server confirmed it, in execution order, with the transaction
//! boundaries [`crate::capture::txn::Tracker`] sees. The planner works ahead of the server (a
//! pipeline may hold a `SET ROLE` and a write before either is answered), so it plans
//! against [`candidates`]: the confirmed role plus every role a pending change may lead
//! to, and rewrites a write only when all of them may read it.

/// A change of the session's effective role (`SET ROLE`, `SET SESSION AUTHORIZATION`,
/// their `RESET`s, `set_config('role', …)`), which decides what capture may read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleChange {
    /// `SET [LOCAL] ROLE name` (`None`: `NONE`, `DEFAULT`, `RESET ROLE`).
    Role {
        /// Until the transaction ends.
        local: bool,
        /// The role.
        to: Option<String>,
    },
    /// `SET [LOCAL] SESSION AUTHORIZATION name` (`None`: `DEFAULT`, `RESET`); also resets
    /// the role.
    SessionAuthorization {
        /// Until the transaction ends.
        local: bool,
        /// The user.
        to: Option<String>,
    },
    /// `DISCARD ALL`: session authorization and role back to the login user's.
    Discard,
    /// Something changes the role to a value the proxy cannot know (`set_config('role',
    /// $1, …)` with a computed value, a `DO` block that mentions roles).
    Unknown,
}

/// The role settings at one moment: `SET SESSION AUTHORIZATION` and `SET ROLE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Setting {
    /// The session user, when changed from the login user.
    auth: Option<String>,
    /// The role set with `SET ROLE`.
    role: Option<String>,
    /// Changed to a value the proxy cannot see.
    unknown: bool,
}

impl Setting {
    fn apply(&mut self, change: &RoleChange) {
        match change {
            RoleChange::Role { to, .. } => self.role = to.clone(),
            RoleChange::SessionAuthorization { to, .. } => {
                self.auth = to.clone();
                self.role = None;
            }
            RoleChange::Discard => *self = Setting::default(),
            RoleChange::Unknown => self.unknown = true,
        }
        // A later known SET of both settings makes the role known again.
        if matches!(
            change,
            RoleChange::SessionAuthorization { .. } | RoleChange::Discard
        ) {
            self.unknown = false;
        }
    }
}

/// The exact role state of a session, as the server confirmed it.
#[derive(Debug, Clone)]
pub struct RoleState {
    login: String,
    /// What persists past the current transaction's commit.
    session: Setting,
    /// What is in effect now (`SET LOCAL` included).
    current: Setting,
}

/// A saved state, restored by a rollback.
pub type Saved = (Setting, Setting);

impl RoleState {
    /// A session as the login role.
    pub fn new(login: &str) -> Self {
        Self {
            login: login.to_string(),
            session: Setting::default(),
            current: Setting::default(),
        }
    }

    /// The effective role (`current_user`), `None` when unknown.
    pub fn effective(&self) -> Option<&str> {
        effective(&self.current, &self.login)
    }

    /// The login role.
    pub fn login(&self) -> &str {
        &self.login
    }

    /// The session user (`SET SESSION AUTHORIZATION`'s, else the login role).
    fn session_user(&self) -> &str {
        self.current.auth.as_deref().unwrap_or(&self.login)
    }

    /// A change the server confirmed.
    pub fn apply(&mut self, change: &RoleChange) {
        let local = matches!(
            change,
            RoleChange::Role { local: true, .. }
                | RoleChange::SessionAuthorization { local: true, .. }
        );
        self.current.apply(change);
        if !local {
            self.session.apply(change);
        }
    }

    /// The state to restore if what follows is rolled back.
    pub fn save(&self) -> Saved {
        (self.session.clone(), self.current.clone())
    }

    /// A rollback (of the transaction or to a savepoint) restores a saved state.
    pub fn restore(&mut self, saved: &Saved) {
        self.session = saved.0.clone();
        self.current = saved.1.clone();
    }

    /// The transaction committed: `SET LOCAL`s end.
    pub fn end_transaction(&mut self) {
        self.current = self.session.clone();
    }
}

fn effective<'a>(s: &'a Setting, login: &'a str) -> Option<&'a str> {
    if s.unknown {
        return None;
    }
    Some(s.role.as_deref().or(s.auth.as_deref()).unwrap_or(login))
}

/// The roles a write planned now may run as: the confirmed role, and every role the
/// changes not yet answered may lead to. `None` when one of them is unknown.
pub fn candidates(confirmed: &RoleState, pending: &[RoleChange]) -> Option<Vec<String>> {
    let mut roles = vec![confirmed.effective()?.to_string()];
    // Session users a `RESET ROLE` may fall back to.
    let mut users = vec![
        confirmed.session_user().to_string(),
        confirmed.login.clone(),
    ];
    for change in pending {
        match change {
            RoleChange::Role { to: Some(r), .. } => roles.push(r.clone()),
            RoleChange::Role { to: None, .. } => roles.extend(users.iter().cloned()),
            RoleChange::SessionAuthorization { to: Some(u), .. } => {
                users.push(u.clone());
                roles.push(u.clone());
            }
            RoleChange::SessionAuthorization { to: None, .. } | RoleChange::Discard => {
                roles.push(confirmed.login.clone())
            }
            RoleChange::Unknown => return None,
        }
    }
    roles.sort();
    roles.dedup();
    Some(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(local: bool, to: Option<&str>) -> RoleChange {
        RoleChange::Role {
            local,
            to: to.map(str::to_string),
        }
    }

    #[test]
    fn set_reset_and_session_authorization() {
        let mut s = RoleState::new("app");
        assert_eq!(s.effective(), Some("app"));
        s.apply(&role(false, Some("r1")));
        assert_eq!(s.effective(), Some("r1"));
        s.apply(&RoleChange::SessionAuthorization {
            local: false,
            to: Some("alice".into()),
        });
        assert_eq!(s.effective(), Some("alice"), "SSA resets the role");
        s.apply(&role(false, Some("r2")));
        s.apply(&role(false, None));
        assert_eq!(
            s.effective(),
            Some("alice"),
            "RESET ROLE falls back to the session user"
        );
        s.apply(&RoleChange::Discard);
        assert_eq!(s.effective(), Some("app"));
    }

    #[test]
    fn transaction_scoping() {
        let mut s = RoleState::new("app");
        // BEGIN; SET LOCAL ROLE r1; COMMIT → back to app.
        let saved = s.save();
        s.apply(&role(true, Some("r1")));
        assert_eq!(s.effective(), Some("r1"));
        s.end_transaction();
        assert_eq!(s.effective(), Some("app"));
        // BEGIN; SET ROLE r2; ROLLBACK → app.
        let _ = saved;
        let saved = s.save();
        s.apply(&role(false, Some("r2")));
        s.restore(&saved);
        assert_eq!(s.effective(), Some("app"));
        // BEGIN; SET ROLE r2; COMMIT → r2.
        s.apply(&role(false, Some("r2")));
        s.end_transaction();
        assert_eq!(s.effective(), Some("r2"));
        // SET ROLE r3 (session) after SET LOCAL in one transaction persists.
        s.apply(&role(true, Some("x")));
        s.apply(&role(false, Some("r3")));
        s.end_transaction();
        assert_eq!(s.effective(), Some("r3"));
    }

    #[test]
    fn unknown_until_known_again() {
        let mut s = RoleState::new("app");
        s.apply(&RoleChange::Unknown);
        assert_eq!(s.effective(), None);
        assert!(candidates(&s, &[]).is_none());
        s.apply(&RoleChange::Discard);
        assert_eq!(s.effective(), Some("app"));
    }

    #[test]
    fn candidates_cover_every_pending_change() {
        let s = RoleState::new("app");
        assert_eq!(candidates(&s, &[]), Some(vec!["app".to_string()]));
        let c = candidates(&s, &[role(false, Some("r1")), role(false, None)]);
        assert_eq!(c, Some(vec!["app".to_string(), "r1".to_string()]));
        assert!(candidates(&s, &[RoleChange::Unknown]).is_none());
    }
}
