//! The git commands bisect needs, run as `git -C DIR …` child processes (git's own
//! bisect machinery does the searching; Flux only judges commits).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A git command failed.
#[derive(Debug, thiserror::Error)]
#[error("git {args} (in {dir}): {message}")]
pub struct GitError {
    /// The arguments.
    pub args: String,
    /// Where it ran.
    pub dir: String,
    /// Its complaint, or why it could not run.
    pub message: String,
}

/// A commit, as bisect reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Commit {
    /// Full hash.
    pub hash: String,
    /// Abbreviated hash (7 characters, more when ambiguous).
    pub short: String,
    /// First line of the message.
    pub subject: String,
    /// Committer date, `YYYY-MM-DD`.
    pub date: String,
    /// Author e-mail.
    pub author: String,
}

/// Runs `git -C dir args…`; its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    let out = run(dir, args)?;
    if !out.status.success() {
        return Err(error(dir, args, &String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn run(dir: &Path, args: &[&str]) -> Result<Output, GitError> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| error(dir, args, &format!("cannot run git: {e}")))
}

fn error(dir: &Path, args: &[&str], message: &str) -> GitError {
    GitError {
        args: args.join(" "),
        dir: dir.display().to_string(),
        message: message
            .trim()
            .lines()
            .last()
            .unwrap_or("failed")
            .to_string(),
    }
}

/// The top of the work tree holding `dir`.
pub fn toplevel(dir: &Path) -> Result<PathBuf, GitError> {
    git(dir, &["rev-parse", "--show-toplevel"]).map(PathBuf::from)
}

/// The full hash of a commit-ish.
pub fn resolve(dir: &Path, rev: &str) -> Result<String, GitError> {
    git(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .map_err(|mut e| {
        e.message = format!("{rev:?} is not a commit here");
        e
    })
}

/// Where a finished `git bisect` in the work tree `dir` stands, read from its refs (not
/// its messages): the first bad commit when one is isolated, else the commits it could
/// be (skipped ones left it undecided); `None` when no bisect state is there.
pub fn bisect_result(dir: &Path) -> Result<Option<Bisected>, GitError> {
    let Ok(bad) = resolve(dir, "refs/bisect/bad") else {
        return Ok(None);
    };
    let goods = git(
        dir,
        &[
            "for-each-ref",
            "--format=%(objectname)",
            "refs/bisect/good-*",
        ],
    )?;
    let mut args = vec!["rev-list", bad.as_str(), "--not"];
    args.extend(goods.lines().map(str::trim).filter(|l| !l.is_empty()));
    let between: Vec<String> = git(dir, &args)?.lines().map(str::to_string).collect();
    let skipped = git(
        dir,
        &[
            "for-each-ref",
            "--format=%(objectname)",
            "refs/bisect/skip-*",
        ],
    )?;
    let skipped: Vec<&str> = skipped.lines().map(str::trim).collect();
    Ok(Some(match between.as_slice() {
        [only] if *only == bad => Bisected::First(bad),
        // git stops undecided only when every commit left but the bad one was skipped.
        _ if between
            .iter()
            .all(|c| *c == bad || skipped.contains(&c.as_str())) =>
        {
            Bisected::AnyOf(between)
        }
        _ => Bisected::Unfinished,
    }))
}

/// What `git bisect` concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bisected {
    /// The first bad commit.
    First(String),
    /// Skipped commits left these candidates (the bad one among them).
    AnyOf(Vec<String>),
    /// Commits are left untested: the bisect stopped before its end.
    Unfinished,
}

/// The newest commit reachable from `from` committed before `until` (git's date syntax).
pub fn last_before(dir: &Path, from: &str, until: &str) -> Result<Option<String>, GitError> {
    let out = git(dir, &["rev-list", "-1", &format!("--before={until}"), from])?;
    Ok((!out.is_empty()).then_some(out))
}

/// The oldest commit reachable from `from` committed after `since` (first-parent line).
pub fn first_after(dir: &Path, from: &str, since: &str) -> Result<Option<String>, GitError> {
    let out = git(
        dir,
        &[
            "rev-list",
            "--first-parent",
            "--reverse",
            &format!("--after={since}"),
            from,
        ],
    )?;
    Ok(out.lines().next().map(str::to_string))
}

/// Whether `a` is an ancestor of `b`.
pub fn is_ancestor(dir: &Path, a: &str, b: &str) -> Result<bool, GitError> {
    let out = run(dir, &["merge-base", "--is-ancestor", a, b])?;
    Ok(out.status.success())
}

/// How many commits `good..bad` holds.
pub fn count(dir: &Path, good: &str, bad: &str) -> Result<usize, GitError> {
    git(dir, &["rev-list", "--count", &format!("{good}..{bad}")]).map(|n| n.parse().unwrap_or(0))
}

/// A commit's hash, short hash, subject, date and author e-mail.
pub fn commit(dir: &Path, rev: &str) -> Result<Commit, GitError> {
    let out = git(
        dir,
        &[
            "show",
            "-s",
            "--format=%H%x00%h%x00%s%x00%cs%x00%ae",
            "--abbrev=7",
            rev,
        ],
    )?;
    let mut f = out.split('\0').map(str::to_string);
    let mut next = || f.next().unwrap_or_default();
    Ok(Commit {
        hash: next(),
        short: next(),
        subject: next(),
        date: next(),
        author: next(),
    })
}

/// The checked-out commit of `dir`.
pub fn head(dir: &Path) -> Result<String, GitError> {
    git(dir, &["rev-parse", "HEAD"])
}

/// A detached worktree of `repo` at `rev` in `path`, removed (with its bisect state) when
/// dropped — on success, errors and unwinding alike.
pub struct Worktree {
    repo: PathBuf,
    /// Its directory.
    pub path: PathBuf,
}

impl Worktree {
    /// `git worktree add --detach PATH REV`.
    pub fn add(repo: &Path, path: &Path, rev: &str) -> Result<Worktree, GitError> {
        let p = path.display().to_string();
        git(repo, &["worktree", "add", "--detach", "--quiet", &p, rev])?;
        Ok(Worktree {
            repo: repo.to_path_buf(),
            path: path.to_path_buf(),
        })
    }

    /// Checks out `rev` (detached).
    pub fn checkout(&self, rev: &str) -> Result<(), GitError> {
        git(&self.path, &["checkout", "--quiet", "--detach", rev]).map(|_| ())
    }
}

impl Drop for Worktree {
    fn drop(&mut self) {
        // Bisect state (refs/bisect/*, BISECT_LOG) is per worktree: reset it first, then
        // the worktree goes, then any record of it.
        let _ = run(&self.path, &["bisect", "reset", "--quiet"]);
        let p = self.path.display().to_string();
        let _ = run(&self.repo, &["worktree", "remove", "--force", &p]);
        let _ = std::fs::remove_dir_all(&self.path);
        let _ = run(&self.repo, &["worktree", "prune"]);
    }
}
