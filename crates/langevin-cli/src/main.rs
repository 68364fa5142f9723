//! The `langevin` command-line program.

use clap::{Parser, Subcommand};

mod emt;
#[macro_use]
mod exit;
mod thermo;

#[derive(Parser)]
#[command(name = "langevin", version, about = "Bayesian learning and thermodynamic computing")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Thermodynamic computing: OU sampling, linear algebra, SPU, analog samplers, TNGD.
    #[command(subcommand)]
    Thermo(thermo::ThermoCommand),
    /// Extended Mind attention: answer questions from a memory bank of a document.
    #[command(subcommand)]
    Emt(emt::EmtCommand),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Thermo(c) => thermo::run(c),
        Command::Emt(c) => emt::run(c),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(exit::code_for(&e));
    }
}
