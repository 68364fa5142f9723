//! The benchmark MLP through langevin-models' hand-written density
//! ([`MlpDensity`]): same network, prior and data as `common::mlp_density`,
//! with one-hot targets (the model crate's batch format).
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use langevin_models::{Batch, MlpDensity, MlpLikelihood};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use crate::common::{MlpBatch, MLP_SIZES, N_DATA, PRIOR_VAR};

/// Size of the full data set of the Laplace workload and its batch size.
pub const LAPLACE_N: usize = 10_000;
pub const LAPLACE_BATCH: usize = 100;

/// The MLP log posterior with an analytic gradient, f32, `threads` threads
/// per matrix product. The value differs from `common::mlp_density`'s by the
/// prior's normalising constant / N only.
pub fn fast_mlp_density(threads: usize) -> MlpDensity {
    MlpDensity::new(
        &MLP_SIZES,
        MlpLikelihood::Categorical {
            n_classes: MLP_SIZES[3],
        },
        PRIOR_VAR.sqrt(),
        N_DATA as usize,
        DType::F32,
    )
    .expect("valid MLP")
    .with_threads(threads)
}

/// The same minibatch as `b`, with one-hot targets.
pub fn fast_mlp_batch(b: &MlpBatch) -> Batch {
    let labels = b.y.to_vec1::<u32>().expect("labels");
    let k = MLP_SIZES[3];
    let mut onehot = vec![0f32; labels.len() * k];
    for (i, &c) in labels.iter().enumerate() {
        onehot[i * k + c as usize] = 1.0;
    }
    Batch {
        x: b.x.clone(),
        y: Tensor::from_vec(onehot, (labels.len(), k), &Device::Cpu).expect("y"),
    }
}

/// `LAPLACE_N` random points (standard normal pixels, uniform labels) in
/// batches of `LAPLACE_BATCH`.
pub fn laplace_batches(seed: u64) -> Vec<Batch> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (d, k) = (MLP_SIZES[0], MLP_SIZES[3]);
    (0..LAPLACE_N / LAPLACE_BATCH)
        .map(|_| {
            let x: Vec<f32> = (0..LAPLACE_BATCH * d)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    z as f32
                })
                .collect();
            let mut y = vec![0f32; LAPLACE_BATCH * k];
            for i in 0..LAPLACE_BATCH {
                y[i * k + rng.random_range(0..k)] = 1.0;
            }
            Batch {
                x: Tensor::from_vec(x, (LAPLACE_BATCH, d), &Device::Cpu).expect("x"),
                y: Tensor::from_vec(y, (LAPLACE_BATCH, k), &Device::Cpu).expect("y"),
            }
        })
        .collect()
}
