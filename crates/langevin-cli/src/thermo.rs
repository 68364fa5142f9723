//! `langevin thermo` (being built).

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ThermoCommand {}

pub fn run(cmd: ThermoCommand) -> anyhow::Result<()> {
    match cmd {}
}
