//! LOCATION from stack traces as each runtime prints them (fixtures in
//! `fixtures/stacks/`, see its README): the innermost application frame, relative to the
//! directory the application's frames share; runtimes' and packages' frames skipped.

use flux_read::location::{app_frame, frames};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/stacks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn located(name: &str) -> (String, Option<String>, String) {
    let l = app_frame(&fixture(name)).unwrap_or_else(|| panic!("no app frame in {name}"));
    (l.to_string(), l.function, l.path)
}

#[test]
fn python_tracebacks_point_at_the_innermost_app_frame_relative_to_the_app() {
    let (at, function, path) = located("python.txt");
    assert_eq!(at, "payments/charge.py:5");
    assert_eq!(function.as_deref(), Some("charge"));
    assert_eq!(path, "/tmp/fx/srv/shop/payments/charge.py");
    // requests' and urllib3's frames are the library's.
    assert!(frames(&fixture("python.txt"))
        .iter()
        .any(|f| f.library && f.file.contains("site-packages/requests")));
}

#[test]
fn node_stacks_with_async_frames() {
    let (at, function, _) = located("node.txt");
    assert_eq!(at, "payments/create.js:3");
    assert_eq!(function.as_deref(), Some("chargeCard"));
    let all = frames(&fixture("node.txt"));
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].function.as_deref(), Some("transfer"));
}

#[test]
fn java_frames_become_package_paths_and_jdk_frames_are_skipped() {
    let (at, function, _) = located("java.txt");
    assert_eq!(at, "com/acme/payments/ChargeService.java:8");
    assert_eq!(
        function.as_deref(),
        Some("com.acme.payments.ChargeService.validate")
    );
    let all = frames(&fixture("java.txt"));
    assert!(all[1].library, "{:?}", all[1]);
    assert_eq!(all[1].file, "java/lang/Iterable.java");
}

#[test]
fn go_stacks_skip_the_runtime_and_module_cache() {
    let (at, function, _) = located("go.txt");
    assert_eq!(at, "payments/client.go:42");
    assert_eq!(
        function.as_deref(),
        Some("github.com/acme/transfer/internal/payments.(*Client).Charge")
    );
    let all = frames(&fixture("go.txt"));
    assert_eq!(all.iter().filter(|f| !f.library).count(), 2);
}

#[test]
fn ruby_backtraces_skip_gems_and_the_standard_library() {
    let (at, function, _) = located("ruby.txt");
    assert_eq!(at, "services/payments/charge.rb:42");
    assert_eq!(function.as_deref(), Some("Payments::Charge#call"));
    assert_eq!(
        frames(&fixture("ruby.txt"))
            .iter()
            .filter(|f| f.library)
            .count(),
        2
    );
}

#[test]
fn nothing_to_point_at_is_none() {
    assert_eq!(app_frame("no frames here"), None);
    assert_eq!(
        app_frame("    at processTicksAndRejections (node:internal/process/task_queues:95:5)"),
        None
    );
}
