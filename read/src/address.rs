//! Naming a recorded request: its id, or a unique prefix of it (`req:` optional), as
//! `flux tail` prints them. One rule for every command: at least 4 characters, and an
//! ambiguous prefix lists its candidates.

use flux_store::{Store, StoreError};

/// The fewest characters a prefix may have (fewer would match half a busy record).
pub const MIN_PREFIX: usize = 4;

/// How many candidates an ambiguous prefix lists.
const CANDIDATES: usize = 20;

/// Why a request could not be named.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// Fewer than [`MIN_PREFIX`] characters.
    #[error("request id {0:?} is too short: give at least {MIN_PREFIX} characters")]
    TooShort(String),
    /// Nothing recorded carries that id.
    #[error("nothing recorded for request {0}: no spans, changes or statements carry that id (flux tail lists them)")]
    NotFound(String),
    /// Several requests start with the prefix.
    #[error("request prefix {given} is ambiguous; candidates:\n  {}", candidates.join("\n  "))]
    Ambiguous {
        /// The prefix.
        given: String,
        /// Requests it matches (up to 20).
        candidates: Vec<String>,
    },
    /// The record could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The request id or unique prefix `given` names in `store`.
pub fn resolve(store: &Store, given: &str) -> Result<String, AddressError> {
    let given = given.strip_prefix("req:").unwrap_or(given);
    if given.chars().count() < MIN_PREFIX {
        return Err(AddressError::TooShort(given.to_string()));
    }
    let found = store.requests_with_prefix(given, CANDIDATES)?;
    match found.as_slice() {
        [] => Err(AddressError::NotFound(given.to_string())),
        [one] => Ok(one.clone()),
        many if many.iter().any(|r| r == given) => Ok(given.to_string()),
        many => Err(AddressError::Ambiguous {
            given: given.to_string(),
            candidates: many.to_vec(),
        }),
    }
}

/// In a replay run's record: the replay of the recorded request `original` (an id or a
/// prefix of one), when the run replayed exactly one such request.
pub fn replay_of(run: &Store, original: &str) -> Result<Option<String>, StoreError> {
    let original = original.strip_prefix("req:").unwrap_or(original);
    Ok(match run.replays_of(original, 2)?.as_slice() {
        [one] => Some(one.replay.clone()),
        _ => None,
    })
}
