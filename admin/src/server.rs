//! The admin HTTP routes: `GET /metrics`, `/healthz`, `/readyz`.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::health::Readiness;
use crate::metrics::Sources;

/// The content type of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Admin {
    sources: Sources,
    readiness: Readiness,
}

/// Serves the admin routes on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    sources: Sources,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(sources, readiness))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The routes, for embedding or testing.
pub fn router(sources: Sources, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(Admin { sources, readiness }))
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    // Reading the data dir's size touches the filesystem: off the event loop.
    let sources = admin.sources.clone();
    let body = tokio::task::spawn_blocking(move || sources.render())
        .await
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], body).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(admin): State<Arc<Admin>>) -> Response {
    let checks = admin.readiness.check().await;
    let ready = checks.iter().all(|c| c.ok);
    let body: String = checks
        .iter()
        .map(|c| {
            format!(
                "{} {}: {}\n",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            )
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}
