//! `flux store stats` and `flux store compact`: what the data dir holds, and reclaiming
//! the space of what retention removed.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use flux_store::Nanos;
use serde_json::json;

use crate::output::out;

/// `flux store …`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Per column family: size on disk, records, oldest and newest record times.
    Stats(StatsArgs),
    /// Compact every column family now, so removed records stop taking space. Needs the
    /// data dir to itself: stop `flux proxy` first (its retention compacts as it goes).
    Compact(CompactArgs),
}

/// `flux store stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The data dir `flux proxy` records into.
    #[arg(long, env = "FLUX_DATA_DIR")]
    data_dir: PathBuf,

    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// `flux store compact`.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// The data dir `flux proxy` records into.
    #[arg(long, env = "FLUX_DATA_DIR")]
    data_dir: PathBuf,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Runs a `flux store` subcommand.
pub fn run(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Stats(args) => stats(args),
        StoreCommand::Compact(args) => compact(args),
    }
}

fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let store = super::state::open(&args.data_dir)?;
    let families = store
        .family_stats()
        .with_context(|| format!("reading {}", args.data_dir.display()))?;
    if args.format == Format::Json {
        out!("{}", json!({ "families": families }));
        return Ok(());
    }
    let time = |t: Option<Nanos>| {
        t.map(|t| {
            super::state::local(t)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "—".into())
    };
    out!(
        "{:<22} {:>10} {:>10} {:>10}  {:<19}  {:<19}  TIMES",
        "FAMILY",
        "ON DISK",
        "IN MEMORY",
        "RECORDS",
        "OLDEST",
        "NEWEST"
    );
    let (mut disk, mut memory) = (0, 0);
    for f in &families {
        disk += f.table_bytes;
        memory += f.memtable_bytes;
        let row = format!(
            "{:<22} {:>10} {:>10} {:>10}  {:<19}  {:<19}  {}",
            f.family,
            bytes(f.table_bytes),
            bytes(f.memtable_bytes),
            format!("~{}", f.records),
            time(f.oldest),
            time(f.newest),
            if f.oldest.is_some() { f.time_of } else { "" }
        );
        out!("{}", row.trim_end());
    }
    out!("{:<22} {:>10} {:>10}", "total", bytes(disk), bytes(memory));
    Ok(())
}

fn compact(args: CompactArgs) -> anyhow::Result<()> {
    let dir = &args.data_dir;
    if !dir.join("CURRENT").is_file() {
        anyhow::bail!("no Flux record in {}", dir.display());
    }
    let store = flux_read::open_writer(dir).with_context(|| {
        format!(
            "opening {} to compact it: is flux proxy running on it? Stop it first (its --retain/--retain-size passes compact as they remove records)",
            dir.display()
        )
    })?;
    let before = store.table_bytes();
    store.compact();
    let after = store.table_bytes();
    out!(
        "compacted {}: {} → {}",
        dir.display(),
        bytes(before),
        bytes(after)
    );
    Ok(())
}

/// 1536 → `1.5 KiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(super::bytes(0), "0 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(20 << 30), "20.0 GiB");
    }
}
