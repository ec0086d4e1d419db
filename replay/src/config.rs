//! `flux.toml`: how to run the app, where to replay, and fixtures for outbound calls
//! (DESIGN §7). Found in the current directory or its nearest parent that has one, like
//! `.git`, or named with `--config`.
//!
//! ```toml
//! [app]
//! start = "python app.py"              # run from this file's directory
//! url = "http://127.0.0.1:{port}"      # {port}: a free port Flux picks, also exported as PORT
//! ready = "/health"                    # polled until 2xx; absent: until the port accepts
//! build = "pip install -r requirements.txt"   # bisect only: once per tested commit
//! env = { PAYMENT_TIMEOUT = "5" }
//!
//! [replay]
//! database = "postgres://postgres@127.0.0.1:5432/shop_scratch"   # never the recorded upstream
//! ignore = ["*.updated_at", "orders.created_at"]
//!
//! [stubs]
//! "POST payments.example.com/charge" = { status = 200, body = '{"id": "ch_stub"}' }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file's name.
pub const FILE_NAME: &str = "flux.toml";

/// A loaded `flux.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it came from; the app runs in its directory.
    pub path: PathBuf,
    /// How to run the app.
    pub app: App,
    /// Where and how to replay.
    pub replay: Replay,
    /// Answers for outbound calls that have no recording.
    pub stubs: Vec<StubFixture>,
}

/// `[app]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// Shell command that starts the app.
    pub start: String,
    /// Where the app listens; `{port}` is replaced by the port Flux picks.
    #[serde(default = "default_url")]
    pub url: String,
    /// A path polled until it answers 2xx; `None`: until the port accepts connections.
    pub ready: Option<String>,
    /// Shell command run once per tested commit (bisect).
    pub build: Option<String>,
    /// Extra environment for the app.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_url() -> String {
    "http://127.0.0.1:{port}".to_string()
}

/// `[replay]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// The scratch database the replay writes to (never the recorded upstream).
    pub database: String,
    /// Columns whose differences do not count: `table.column`, `*.column`.
    #[serde(default)]
    pub ignore: Vec<String>,
}

/// One `[stubs]` entry: `"METHOD host/path" = { status, body }` (host `*`: any host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubFixture {
    /// Request method, upper case.
    pub method: String,
    /// Host, lower case, without port.
    pub host: String,
    /// Path, without query.
    pub path: String,
    /// Status to answer with.
    pub status: u16,
    /// Body to answer with.
    pub body: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    app: App,
    replay: Replay,
    #[serde(default)]
    stubs: BTreeMap<String, StubValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StubValue {
    #[serde(default = "ok")]
    status: u16,
    #[serde(default)]
    body: String,
}

fn ok() -> u16 {
    200
}

/// Why a configuration could not be used. Each says which file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No `flux.toml` here or above.
    #[error("no {FILE_NAME} in {0} or any parent directory: create one (see DESIGN §7 or the README), or pass --config")]
    NotFound(PathBuf),
    /// It could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not valid TOML of the expected shape.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the position where TOML knows it.
        message: String,
    },
}

/// The nearest `flux.toml` at or above `dir`.
pub fn find(dir: &Path) -> Result<PathBuf, ConfigError> {
    dir.ancestors()
        .map(|d| d.join(FILE_NAME))
        .find(|p| p.is_file())
        .ok_or_else(|| ConfigError::NotFound(dir.to_path_buf()))
}

/// Reads and checks a `flux.toml`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses the text of a `flux.toml` at `path`.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let file: File = toml::from_str(text).map_err(|e| invalid(e.to_string().trim().to_string()))?;
    if file.app.start.trim().is_empty() {
        return Err(invalid(
            "[app] start is empty: give the command that starts the app".into(),
        ));
    }
    if !file.app.url.starts_with("http://") {
        return Err(invalid(format!(
            "[app] url {:?}: expected http://HOST:PORT (with {{port}} for the port Flux picks)",
            file.app.url
        )));
    }
    let mut stubs = Vec::new();
    for (key, value) in file.stubs {
        let (method, target) = key
            .trim()
            .split_once(' ')
            .ok_or_else(|| invalid(format!("[stubs] {key:?}: expected \"METHOD host/path\"")))?;
        let target = target.trim();
        let (host, path) = match target.find('/') {
            Some(i) => (&target[..i], &target[i..]),
            None => (target, "/"),
        };
        if host.is_empty() || method.is_empty() {
            return Err(invalid(format!(
                "[stubs] {key:?}: expected \"METHOD host/path\""
            )));
        }
        stubs.push(StubFixture {
            method: method.to_ascii_uppercase(),
            host: host.split(':').next().unwrap_or(host).to_ascii_lowercase(),
            path: path.to_string(),
            status: value.status,
            body: value.body,
        });
    }
    Ok(Config {
        path: path.to_path_buf(),
        app: file.app,
        replay: file.replay,
        stubs,
    })
}

impl Config {
    /// The directory the app runs in.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new("."))
    }

    /// The app's URL for a port.
    pub fn app_url(&self, port: u16) -> String {
        self.app.url.replace("{port}", &port.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[app]
start = "python app.py"
ready = "/health"
env = { PAYMENT_TIMEOUT = "5" }

[replay]
database = "postgres://postgres@127.0.0.1:5432/shop_scratch"
ignore = ["*.updated_at", "orders.created_at"]

[stubs]
"POST payments.example.com/charge" = { status = 200, body = '{"id": "ch_stub"}' }
"get api.example.com:8443" = { status = 204 }
"#;

    #[test]
    fn the_design_example_parses() {
        let c = parse(EXAMPLE, Path::new("/srv/shop/flux.toml")).expect("parse");
        assert_eq!(c.app.start, "python app.py");
        assert_eq!(c.app_url(8123), "http://127.0.0.1:8123");
        assert_eq!(
            c.app.env.get("PAYMENT_TIMEOUT").map(String::as_str),
            Some("5")
        );
        assert_eq!(c.dir(), Path::new("/srv/shop"));
        assert_eq!(c.replay.ignore.len(), 2);
        assert_eq!(
            c.stubs,
            vec![
                StubFixture {
                    method: "POST".into(),
                    host: "payments.example.com".into(),
                    path: "/charge".into(),
                    status: 200,
                    body: r#"{"id": "ch_stub"}"#.into(),
                },
                StubFixture {
                    method: "GET".into(),
                    host: "api.example.com".into(),
                    path: "/".into(),
                    status: 204,
                    body: String::new(),
                },
            ]
        );
    }

    #[test]
    fn mistakes_say_where_and_what() {
        let p = Path::new("flux.toml");
        for (text, needle) in [
            ("[app]\nstart = 'x'\n", "replay"),
            (
                "[app]\nstart = 'x'\nstrat = 1\n[replay]\ndatabase = 'd'\n",
                "strat",
            ),
            (
                "[app]\nstart = ''\n[replay]\ndatabase = 'd'\n",
                "start is empty",
            ),
            (
                "[app]\nstart = 'x'\nurl = 'localhost:1'\n[replay]\ndatabase = 'd'\n",
                "http://",
            ),
            (
                "[app]\nstart = 'x'\n[replay]\ndatabase = 'd'\n[stubs]\n'charge' = {}\n",
                "METHOD host/path",
            ),
            ("not toml at all [", "flux.toml"),
        ] {
            let e = parse(text, p).expect_err(text).to_string();
            assert!(e.contains(needle), "{text:?} → {e}");
        }
    }

    #[test]
    fn found_in_a_parent_directory() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join(FILE_NAME), EXAMPLE).expect("write");
        let deep = dir.path().join("a/b");
        std::fs::create_dir_all(&deep).expect("mkdir");
        assert_eq!(find(&deep).expect("found"), dir.path().join(FILE_NAME));
        let other = tempfile::tempdir().expect("tmp");
        assert!(matches!(find(other.path()), Err(ConfigError::NotFound(_))));
    }
}
