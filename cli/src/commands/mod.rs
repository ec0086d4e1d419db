//! One module per `flux` subcommand.

pub mod bug;
pub mod debug;
pub mod incident;
pub mod ingest;
pub mod proxy;
pub mod state;
pub mod store;
pub mod tail;
pub mod trace;
pub mod why;
