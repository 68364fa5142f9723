//! langevin-models: models as log posteriors, CSV data, bundled datasets.
//!
//! * [`data`]: CSV loading with a header row and a named target column,
//!   standardisation, seeded train/test splits. Bad data is an error naming
//!   the file, line and column, never a panic.
//! * [`bundled`]: small public datasets shipped in the repository's `data/`
//!   folder and compiled into the library (so `--data iris` works anywhere).
//! * [`model`]: linear regression (Gaussian noise, fixed or learned scale),
//!   logistic regression, softmax regression, MLP classifier and regressor,
//!   each as a batch-averaged log posterior with an isotropic Gaussian prior
//!   (`mean log lik + log prior / N`, so T = 1/N targets the posterior),
//!   evaluated by candle with autograd through
//!   [`CandleDensity`](langevin_core::CandleDensity).
//! * [`mlp_fast`]: the MLP's log posterior with a hand-written backward pass
//!   over reused buffers (what [`Model::density`] returns for MLPs on the
//!   CPU), and its per-example gradients.
//! * [`batches`]: minibatches of a model's rows as a run's batch source.
//! * [`curvature`]: a model as per-example log likelihoods and as a network
//!   output with its likelihood, for the Laplace, GGN and EKF methods.
//! * [`error`]: the crate's typed error.
//! * [`kron`]: the Kronecker factors of the GGN (KFAC Laplace) of every model.

pub mod batches;
pub mod bundled;
pub mod curvature;
pub mod data;
pub mod error;
pub mod kron;
pub mod mlp_fast;
pub mod model;

pub use batches::{Minibatches, ShardMinibatches};
pub use data::{load_csv, load_csv_str, read_csv_shard, CsvShard, Dataset, Split, Standardizer};
pub use error::{ModelError, Result};
pub use mlp_fast::{MlpDensity, MlpGgn, MlpLikelihood};
pub use model::{Batch, Model, ModelKind, ModelSpec, Noise, PointPrediction, Task};
