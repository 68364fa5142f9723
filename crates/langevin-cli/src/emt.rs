//! `langevin emt` (being built).

use clap::Subcommand;

#[derive(Subcommand)]
pub enum EmtCommand {}

pub fn run(cmd: EmtCommand) -> anyhow::Result<()> {
    match cmd {}
}
