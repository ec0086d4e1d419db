//! `flux ingest FILE…`: loads OTLP/JSON files (the collector's file exporter format, one
//! export per line) into a data dir, offline.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use flux_ingest::otlp;
use flux_store::Record;

/// `flux ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// OTLP/JSON files, one ExportTraceServiceRequest per line.
    #[arg(required = true)]
    files: Vec<PathBuf>,

    /// The data dir to load into (created if missing). Not one a running `flux proxy` holds:
    /// send to its --otlp endpoint instead.
    #[arg(long, env = "FLUX_DATA_DIR")]
    data_dir: PathBuf,
}

/// Runs `flux ingest`. Lines that fail to decode are reported with their file and line
/// number and skipped; the rest are stored. Exit status 1 if any line failed.
pub fn run(args: IngestArgs) -> anyhow::Result<()> {
    flux_store::private_dir(&args.data_dir)?;
    let store = flux_read::open_writer(&args.data_dir).with_context(|| {
        format!(
            "opening the store in {} (if flux proxy is running on it, post the files to its --otlp endpoint instead)",
            args.data_dir.display()
        )
    })?;
    let (mut spans, mut bad) = (0usize, 0usize);
    for file in &args.files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let mut batch = Vec::new();
        for (line, decoded) in otlp::decode_lines(&text) {
            match decoded {
                Ok(s) => {
                    spans += s.len();
                    batch.extend(s.into_iter().map(Record::Span));
                }
                Err(e) => {
                    bad += 1;
                    tracing::error!("{}:{line}: {e}", file.display());
                }
            }
            if batch.len() >= 10_000 {
                store.write(&std::mem::take(&mut batch), false)?;
            }
        }
        store.write(&batch, false)?;
    }
    store.flush().context("flushing the store")?;
    tracing::info!(spans, files = args.files.len(), "ingested");
    if bad > 0 {
        anyhow::bail!("{bad} export line(s) could not be read (see above); the rest were stored");
    }
    Ok(())
}
