//! One module per `flux` subcommand.

pub mod proxy;
pub mod state;
pub mod why;
