//! `tandem`: the whole suite in one process on the embedded default.
//!
//! `tandem dev [--listen ADDR] [--data-dir DIR] [--demo]` serves every service on one address
//! with SQLite files under DIR (one database per service) and the in-process event bus.

mod demo;
mod dev;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tandem", version, about = "Tandem, the partner relationship management backend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole suite in one process on SQLite, with no server to install.
    Dev(dev::DevArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tandem_identity::allocator::return_hash_memory();
    match Cli::parse().command {
        Command::Dev(args) => dev::run(args).await,
    }
}
