//! The `langevin` command-line program.

use clap::{Parser, Subcommand};

// The pipelines shared with the library (`src/lib.rs`, used by the Python
// package); `crate::fit`, `crate::exit`, ... resolve through these imports.
#[macro_use]
extern crate langevin_cli;
use langevin_cli::{bail_input, evaluate, exit, fit, glm, rundir, summary};

mod compare;
mod diagnose;
mod emt;
mod predict;
mod thermo;

#[derive(Parser)]
#[command(
    name = "langevin",
    version,
    about = "Bayesian learning and thermodynamic computing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bayesian learning on a CSV file or a bundled data set (default: bundled iris_virginica).
    Fit(Box<fit::FitArgs>),
    /// Combine the parts of a run (`fit --chain-range`) into the folder the single run writes.
    Merge(fit::merge::MergeArgs),
    /// Fit several methods on the same data and tabulate their held-out metrics.
    Compare(compare::CompareArgs),
    /// Posterior predictive of a fitted run for new rows.
    Predict(predict::PredictArgs),
    /// Convergence diagnostics of a fitted run (mean, sd, ESS, R-hat).
    Diagnose(diagnose::DiagnoseArgs),
    /// Thermodynamic computing: OU sampling, linear algebra, SPU, analog samplers, TNGD.
    #[command(subcommand)]
    Thermo(thermo::ThermoCommand),
    /// Extended Mind attention: answer questions from a memory bank of a document.
    #[command(subcommand)]
    Emt(emt::EmtCommand),
}

fn main() {
    let cli = Cli::parse();
    // Under mpirun (cargo feature `mpi`), MPI lives until the end of `code`.
    let code = {
        let _mpi = fit::ranks::start();
        match run(cli) {
            Ok(()) => 0,
            Err(e) => fit::ranks::fail(&e),
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Fit(a) => fit::run(*a),
        Command::Merge(a) => fit::merge::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Diagnose(a) => diagnose::run(a),
        Command::Thermo(c) => thermo::run(c),
        Command::Emt(c) => emt::run(c),
    }
}
