//! The arguments of `langevin fit` (and the data/model options `compare` shares).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

/// What the warm-up of a sampler adapts (`--adapt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdaptArg {
    /// The step size and a diagonal preconditioner (the posterior variances).
    Diag,
    /// The step size and a dense preconditioner (the posterior covariance).
    Dense,
    /// The step size only.
    Step,
    /// Nothing: the step size and friction as given or defaulted, no preconditioner.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodArg {
    Sgld,
    Sghmc,
    Sgnht,
    Baoa,
    Map,
    /// No-U-Turn Sampler (nuts-rs), full batch: the exact reference.
    Nuts,
    // Gaussian approximations (fit::gaussian): fitted, then sampled.
    /// Diagonal-Gaussian variational inference.
    Vi,
    /// Dense-Gaussian variational inference.
    ViDense,
    /// IVON (improved variational online Newton), diagonal Gaussian.
    Ivon,
    /// Laplace at the MAP, diagonal empirical Fisher.
    LaplaceDiagFisher,
    /// Laplace at the MAP, dense empirical Fisher.
    LaplaceDenseFisher,
    /// Laplace at the MAP, diagonal generalised Gauss-Newton.
    LaplaceDiagGgn,
    /// Laplace at the MAP, dense generalised Gauss-Newton.
    LaplaceDenseGgn,
    /// Laplace at the MAP, dense Hessian.
    LaplaceHessian,
    /// Laplace at the MAP, Kronecker-factored (KFAC) GGN per linear layer.
    LaplaceKfac,
    /// Diagonal extended Kalman filter.
    Ekf,
    /// Dense extended Kalman filter.
    EkfDense,
    /// The analog (thermodynamic) sampler: the circuit of a linear-Gaussian (with
    /// --noise-sd) or logistic posterior, simulated, with its analog time and energy.
    Analog,
    /// Thermodynamic natural gradient descent (a point estimate): the natural-gradient
    /// solves simulated on an analog device, with its analog time and energy, and Adam
    /// over the same steps as the baseline.
    Tngd,
}

impl MethodArg {
    /// The command-line name (`vi-dense`, ...).
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_else(|| format!("{self:?}"))
    }

    /// One of the SGMCMC samplers, `map` (run by the library's run loop) or
    /// `nuts` (its own driver, fit::nuts).
    pub fn is_sampler(self) -> bool {
        matches!(
            self,
            MethodArg::Sgld
                | MethodArg::Sghmc
                | MethodArg::Sgnht
                | MethodArg::Baoa
                | MethodArg::Map
                | MethodArg::Nuts
        )
    }

    /// Display name (reports and plot titles).
    pub fn label(self) -> &'static str {
        match self {
            MethodArg::Sgld => "SGLD",
            MethodArg::Sghmc => "SGHMC",
            MethodArg::Sgnht => "SGNHT",
            MethodArg::Baoa => "BAOA",
            MethodArg::Map => "MAP",
            MethodArg::Nuts => "NUTS",
            MethodArg::Vi => "VI (diagonal)",
            MethodArg::ViDense => "VI (dense)",
            MethodArg::Ivon => "IVON",
            MethodArg::LaplaceDiagFisher => "Laplace (diagonal Fisher)",
            MethodArg::LaplaceDenseFisher => "Laplace (dense Fisher)",
            MethodArg::LaplaceDiagGgn => "Laplace (diagonal GGN)",
            MethodArg::LaplaceDenseGgn => "Laplace (dense GGN)",
            MethodArg::LaplaceHessian => "Laplace (Hessian)",
            MethodArg::LaplaceKfac => "Laplace (KFAC GGN)",
            MethodArg::Ekf => "EKF (diagonal)",
            MethodArg::EkfDense => "EKF (dense)",
            MethodArg::Analog => "analog circuit (simulated)",
            MethodArg::Tngd => "TNGD (simulated device)",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelArg {
    Linear,
    Logistic,
    Softmax,
    Mlp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskArg {
    Classification,
    Regression,
}

/// The data, the model and the split: what `fit` and `compare` share.
#[derive(Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataArgs {
    /// CSV file with a header row, or a bundled data set: iris_virginica (default),
    /// iris, wine, breast_cancer, diabetes, digits.
    #[arg(long)]
    pub data: Option<String>,
    /// Target column (default for a bundled set: its target).
    #[arg(long)]
    pub target: Option<String>,
    /// Model (default: logistic for a two-class integer target, softmax for up
    /// to 20 integer classes, else linear).
    #[arg(long, value_enum)]
    pub model: Option<ModelArg>,
    /// Task of an MLP (default: classification for an integer target with at
    /// most 20 distinct values, else regression).
    #[arg(long, value_enum)]
    pub task: Option<TaskArg>,
    /// Hidden layer widths of the MLP, comma-separated (default 64,64).
    #[arg(long)]
    pub hidden: Option<String>,
    /// Standard deviation of the Gaussian prior on every parameter.
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub prior_sd: f64,
    /// Fix the regression noise sd (in standardised target units) instead of learning it.
    #[arg(long, allow_hyphen_values = true)]
    pub noise_sd: Option<f64>,
    /// Minibatch size (default: MLP 128; other models all training rows up to 2000, else 256).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Fraction of rows held out for the test metrics; 0 fits on every row
    /// (metrics are then on the training rows).
    #[arg(long, default_value_t = 0.2, allow_hyphen_values = true)]
    pub test_fraction: f64,
    /// Seed of the split and of every chain.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Do not standardise features (and a regression target).
    #[arg(long)]
    pub no_standardize: bool,
}

impl Default for DataArgs {
    fn default() -> Self {
        Self {
            data: None,
            target: None,
            model: None,
            task: None,
            hidden: None,
            prior_sd: 1.0,
            noise_sd: None,
            batch_size: None,
            test_fraction: 0.2,
            seed: 0,
            no_standardize: false,
        }
    }
}

/// Arguments of `langevin fit`.
#[derive(Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub d: DataArgs,
    /// Sampler (default baoa: underdamped Langevin with a second-order
    /// splitting, which allows far larger steps than sghmc's Euler update at
    /// the same bias), or `map` (the SGHMC machinery at temperature 0), or a
    /// Gaussian approximation (vi, laplace-*, ekf, ...).
    #[arg(long, value_enum, default_value = "baoa")]
    pub method: MethodArg,
    /// Step size ε (posteriors' `lr`). Default: see `docs/cli.md`.
    #[arg(long, allow_hyphen_values = true)]
    pub step_size: Option<f64>,
    /// Friction α of SGHMC, SGNHT and BAOA.
    #[arg(long, allow_hyphen_values = true)]
    pub friction: Option<f64>,
    /// Steps per chain: a run of fixed length. Without it a sampler runs
    /// until converged (see --target-ess, --max-steps).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Warm-up steps at the start of each chain, adapted (--adapt) and
    /// discarded (default: a quarter of --steps, or 5000 for a run until converged).
    #[arg(long)]
    pub burn_in: Option<u64>,
    /// Warm-up adaptation of the samplers (default: diag; none for map).
    #[arg(long, value_enum)]
    #[serde(default)]
    pub adapt: Option<AdaptArg>,
    /// Most steps per chain of a run until converged (default 200000).
    #[arg(long)]
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// A run until converged stops when every bulk and tail ESS is at least this (default 400).
    #[arg(long, allow_hyphen_values = true)]
    #[serde(default)]
    pub target_ess: Option<f64>,
    /// ... and every R-hat at most this (default 1.01).
    #[arg(long, allow_hyphen_values = true)]
    #[serde(default)]
    pub target_rhat: Option<f64>,
    /// Exit with code 4 (after writing everything) when the run ends
    /// without a converged verdict.
    #[arg(long)]
    #[serde(default)]
    pub require_converged: bool,
    /// Keep every K-th step after burn-in (default: at most 1000 draws per chain).
    #[arg(long)]
    pub thin: Option<u64>,
    /// Number of chains, run in parallel (default 4; 1 for map).
    #[arg(long)]
    pub chains: Option<usize>,
    /// Run only chains A..B (0-based, B excluded) of the --chains C run, as
    /// one job of a job array: each chain's draws are those of the whole
    /// run; the folder is a part for `langevin merge`. Needs --steps.
    #[arg(long, value_name = "A..B")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_range: Option<ChainRange>,
    /// Split the rows over the processes of `mpirun` (cargo feature `mpi`):
    /// each rank reads its shard of the CSV file and every rank runs every
    /// chain, the gradients summed over the ranks (for one or a few chains
    /// on data too large or slow for one process; docs/parallel.md).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub data_parallel: bool,
    /// Output directory (default: runs/<UTC timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Stop with exit code 3 after this many divergent (non-finite) steps in a chain.
    #[arg(long, default_value_t = 100)]
    pub max_divergences: u64,
    /// Laplace methods: replace the prior precision by the one that maximises the
    /// Laplace evidence (marginal likelihood) at the MAP, as laplace-torch's
    /// `optimize_prior_precision(method="marglik")`; the MAP is not refitted.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub marglik: bool,
    /// With --marglik on a regression with a fixed --noise-sd and a GGN curvature
    /// (laplace-diag-ggn, laplace-dense-ggn): tune the noise sd by the evidence too
    /// (the --noise-sd value is where the MAP was found).
    #[arg(long, requires = "marglik")]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub marglik_noise: bool,
    /// Laplace methods on an MLP: approximate the last layer only (its weight and
    /// bias), every other parameter fixed at the MAP (laplace-torch's
    /// `subset_of_weights="last_layer"`).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last_layer: bool,
    /// Skip the PNG plots.
    #[arg(long)]
    pub no_plots: bool,
    /// No progress bar and no report on stdout.
    #[arg(long, short)]
    pub quiet: bool,
    /// Worker threads for the chains (default: the number of cores, at most
    /// --chains). The draws do not depend on it.
    #[arg(long)]
    #[serde(skip)]
    pub threads: Option<usize>,
    /// Save the full state of every chain to DIR/checkpoint.json (atomically)
    /// every N steps, so that `--resume DIR` can continue the run after a crash.
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Continue the checkpointed run in DIR (every other option comes from its
    /// checkpoint; only --quiet, --no-plots and --threads may be given). The
    /// result is byte-identical to an uninterrupted run.
    #[arg(long, value_name = "DIR", conflicts_with_all = RESUME_CONFLICTS)]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// --control-variates, --step-schedule, --cycles (fit/cv.rs).
    #[command(flatten)]
    #[serde(flatten)]
    pub cv: super::cv::CvArgs,
}

impl Default for FitArgs {
    fn default() -> Self {
        Self {
            d: DataArgs::default(),
            method: MethodArg::Baoa,
            step_size: None,
            friction: None,
            steps: None,
            burn_in: None,
            adapt: None,
            max_steps: None,
            target_ess: None,
            target_rhat: None,
            require_converged: false,
            thin: None,
            chains: None,
            chain_range: None,
            data_parallel: false,
            out: None,
            max_divergences: 100,
            marglik: false,
            marglik_noise: false,
            last_layer: false,
            no_plots: false,
            quiet: false,
            threads: None,
            checkpoint_every: None,
            resume: None,
            cv: super::cv::CvArgs::default(),
        }
    }
}

/// `--chain-range A..B`: chains `A, A + 1, ..., B - 1` of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainRange {
    pub start: usize,
    pub end: usize,
}

impl ChainRange {
    /// The chains as a range.
    pub fn range(self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

impl std::fmt::Display for ChainRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

impl std::str::FromStr for ChainRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a range of chains A..B (for example 0..2)");
        let (a, b) = s.split_once("..").ok_or_else(bad)?;
        let start: usize = a.trim().parse().map_err(|_| bad())?;
        let end: usize = b.trim().parse().map_err(|_| bad())?;
        if start >= end {
            return Err(format!(
                "`{s}`: the range of chains is empty (A must be below B)"
            ));
        }
        Ok(Self { start, end })
    }
}

/// Options fixed by a checkpoint, so not allowed with `--resume`.
const RESUME_CONFLICTS: &[&str] = &[
    "data",
    "target",
    "model",
    "task",
    "hidden",
    "method",
    "prior_sd",
    "noise_sd",
    "step_size",
    "friction",
    "steps",
    "burn_in",
    "adapt",
    "max_steps",
    "target_ess",
    "target_rhat",
    "thin",
    "chains",
    "chain_range",
    "data_parallel",
    "batch_size",
    "test_fraction",
    "seed",
    "out",
    "no_standardize",
    "max_divergences",
    "checkpoint_every",
    "control_variates",
    "step_schedule",
    "cycles",
];

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        fit: FitArgs,
    }

    /// `FitArgs::default()` is what the command line gives with no option.
    #[test]
    fn default_is_the_command_line_default() {
        let parsed = Cli::try_parse_from(["fit"]).unwrap().fit;
        assert_eq!(parsed, FitArgs::default());
    }
}
