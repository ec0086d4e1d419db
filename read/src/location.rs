//! Where in the application's code a failure happened, from stack traces as each
//! language's runtime prints them (Python, JavaScript/TypeScript, Java and other JVM
//! languages, Go, Ruby) or `code.*` attributes, shown relative to the application's root
//! (`payments/create.ts:42`, not `/srv/app/releases/2024…/src/payments/create.ts:42`).
//!
//! The root is the longest directory prefix the application's own files share across the
//! request's stack traces and `code.filepath` attributes; with one file, its directory.
//! Frames of interpreters, runtimes and installed packages are not the application's.

use serde::Serialize;

/// A place in the application's code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// Source file relative to the application's root (for JVM frames: the package path).
    pub file: String,
    /// Line.
    pub line: Option<u32>,
    /// Function, when known.
    pub function: Option<String>,
    /// The file as the app reported it.
    pub path: String,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        Ok(())
    }
}

/// One frame of a stack trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The file as printed (a JVM frame's file gets its package's path).
    pub file: String,
    /// Line.
    pub line: Option<u32>,
    /// Function.
    pub function: Option<String>,
    /// A runtime's or an installed package's frame, not the application's.
    pub library: bool,
}

impl Frame {
    fn new(file: &str, line: Option<u32>, function: Option<String>) -> Frame {
        let file = file
            .strip_prefix("file://")
            .or_else(|| file.strip_prefix("webpack:///"))
            .unwrap_or(file);
        Frame {
            library: is_library_path(file),
            file: file.to_string(),
            line,
            function,
        }
    }

    /// The frame as a [`Location`], its file made relative to `root`.
    pub fn locate(&self, root: Option<&str>) -> Location {
        Location {
            file: relative(&self.file, root),
            line: self.line,
            function: self.function.clone(),
            path: self.file.clone(),
        }
    }
}

/// Interpreters', runtimes' and package managers' directories.
fn is_library_path(path: &str) -> bool {
    // Older Node prints its own modules as `internal/…` (Go apps have `…/internal/…`).
    if path.starts_with("internal/") {
        return true;
    }
    const MARKERS: [&str; 16] = [
        "site-packages",
        "dist-packages",
        "/lib/python",
        "node_modules",
        "node:",
        "<frozen",
        "<string>",
        "<anonymous>",
        "/pkg/mod/",
        "/usr/local/go/",
        "/usr/lib/go",
        "/src/runtime/",
        "/gems/",
        "/rubygems/",
        "/lib/ruby/",
        "<internal:",
    ];
    MARKERS.iter().any(|m| path.contains(m))
}

/// JVM packages that are not the application's (`java.base/java.lang.…`: the module
/// or class loader before the slash does not count).
fn is_library_class(function: &str) -> bool {
    let function = function.rsplit('/').next().unwrap_or(function);
    const PACKAGES: [&str; 22] = [
        "java.",
        "javax.",
        "jakarta.",
        "jdk.",
        "sun.",
        "com.sun.",
        "kotlin.",
        "kotlinx.",
        "scala.",
        "org.springframework.",
        "org.apache.",
        "org.eclipse.",
        "org.hibernate.",
        "org.postgresql.",
        "io.netty.",
        "io.grpc.",
        "io.opentelemetry.",
        "reactor.",
        "okhttp3.",
        "com.fasterxml.",
        "feign.",
        "com.zaxxer.",
    ];
    PACKAGES.iter().any(|p| function.starts_with(p))
}

/// The frames of a stack trace, innermost first, whatever the language.
pub fn frames(trace: &str) -> Vec<Frame> {
    let mut python = Vec::new();
    let mut others = Vec::new();
    let mut previous: Option<&str> = None;
    for raw in trace.lines() {
        let line = raw.trim();
        if let Some(rest) = line.strip_prefix("File \"") {
            // Python: `File "…", line N, in f` — innermost last.
            if let Some(f) = python_frame(rest) {
                python.push(f);
            }
        } else if let Some(rest) = line.strip_prefix("at ") {
            if let Some(f) = at_frame(rest) {
                others.push(f);
            }
        } else if let Some(f) = go_frame(line, previous) {
            others.push(f);
        } else if let Some(f) = ruby_frame(line) {
            others.push(f);
        }
        previous = Some(line);
    }
    python.into_iter().rev().chain(others).collect()
}

fn python_frame(rest: &str) -> Option<Frame> {
    let (file, rest) = rest.split_once('"')?;
    let line = rest
        .trim_start_matches(',')
        .trim()
        .strip_prefix("line ")
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.trim().parse().ok());
    let function = rest.split_once(", in ").map(|(_, f)| f.trim().to_string());
    Some(Frame::new(file, line, function))
}

/// JavaScript (`f (file:line:col)`, `file:line:col`, `async f (…)`) and JVM
/// (`a.b.C.f(File.java:42)`) frames.
fn at_frame(rest: &str) -> Option<Frame> {
    let rest = rest.strip_prefix("async ").unwrap_or(rest);
    let rest = rest.split(" ~[").next().unwrap_or(rest); // logback's jar suffix
    let (function, place) = match rest.rfind('(') {
        Some(open) => (
            Some(rest[..open].trim().to_string()).filter(|f| !f.is_empty()),
            rest[open + 1..].trim_end_matches(')'),
        ),
        None => (None, rest),
    };
    let jvm = [".java:", ".kt:", ".scala:", ".groovy:"]
        .iter()
        .any(|ext| place.contains(ext));
    if jvm {
        let (file, line) = place.rsplit_once(':')?;
        let function = function?;
        // `com.acme.pay.Charge$Inner.create` → `com/acme/pay/Charge.java`.
        let qualified = function.rsplit('/').next().unwrap_or(&function);
        let class = qualified.rsplit_once('.').map_or("", |(c, _)| c);
        let package = class.rsplit_once('.').map_or("", |(p, _)| p);
        let path = if package.is_empty() {
            file.to_string()
        } else {
            format!("{}/{file}", package.replace('.', "/"))
        };
        return Some(Frame {
            library: is_library_class(&function),
            file: path,
            line: line.parse().ok(),
            function: Some(function),
        });
    }
    let mut parts = place.rsplitn(3, ':');
    let (a, b, c) = (parts.next(), parts.next(), parts.next());
    let (file, line) = match (a, b, c) {
        (Some(col), Some(line), Some(file)) if col.parse::<u32>().is_ok() => {
            (file, line.parse().ok())
        }
        (Some(line), Some(file), None) => (file, line.parse().ok()),
        _ => return None,
    };
    line?;
    Some(Frame::new(file, line, function))
}

/// Go: `pkg.f(…)` then `\t/path/file.go:42 +0x1d`.
fn go_frame(line: &str, previous: Option<&str>) -> Option<Frame> {
    let place = line.split(" +0x").next()?;
    let (file, lineno) = place.rsplit_once(':')?;
    if !file.ends_with(".go") {
        return None;
    }
    let function = previous
        .filter(|p| p.ends_with(')'))
        .and_then(|p| p.rsplit_once('('))
        .map(|(f, _)| f.to_string());
    Some(Frame::new(file, lineno.parse().ok(), function))
}

/// Ruby: ``/app/x.rb:42:in `f'`` or `/app/x.rb:42:in 'C#f'`.
fn ruby_frame(line: &str) -> Option<Frame> {
    let line = line.strip_prefix("from ").unwrap_or(line);
    let (place, function) = line.split_once(":in ")?;
    let (file, lineno) = place.rsplit_once(':')?;
    if !file.ends_with(".rb") {
        return None;
    }
    let function = function
        .trim_matches(|c| c == '`' || c == '\'' || c == '<' || c == '>')
        .to_string();
    Some(Frame::new(
        file,
        lineno.parse().ok(),
        Some(function).filter(|f| !f.is_empty()),
    ))
}

/// The directory the application's files share: the longest common directory prefix of
/// the absolute `files` (with one file, its directory). `None` without absolute files.
pub fn app_root<'a>(files: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut root: Option<Vec<&str>> = None;
    for file in files {
        if !file.starts_with('/') {
            continue;
        }
        let dirs: Vec<&str> = file.split('/').collect();
        let dirs = &dirs[..dirs.len().saturating_sub(1)];
        root = Some(match root {
            None => dirs.to_vec(),
            Some(r) => r
                .iter()
                .zip(dirs)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    root.map(|r| r.join("/")).filter(|r| !r.is_empty())
}

/// `file` without `root/` in front.
fn relative(file: &str, root: Option<&str>) -> String {
    root.and_then(|r| file.strip_prefix(r))
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|rest| !rest.is_empty())
        .unwrap_or(file)
        .to_string()
}

/// The innermost application frame of a stack trace, relative to the directory of the
/// application's frames in it.
pub fn app_frame(trace: &str) -> Option<Location> {
    let frames = frames(trace);
    let root = app_root(
        frames
            .iter()
            .filter(|f| !f.library)
            .map(|f| f.file.as_str()),
    );
    frames
        .iter()
        .find(|f| !f.library)
        .map(|f| f.locate(root.as_deref()))
}
