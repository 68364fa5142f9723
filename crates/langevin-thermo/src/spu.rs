//! Circuit-level model of the stochastic processing unit (SPU).
//!
//! The published device (Melanson et al., "Thermodynamic computing system for
//! AI applications", 2023/2025) has 8 unit cells, each an LC resonator with a
//! resistor and a Gaussian current-noise source, coupled all to all by
//! switched capacitors. With inductor currents `i`, node voltages `v`:
//!
//! ```text
//!     di = L⁻¹ v dt
//!     dv = -C⁻¹ R⁻¹ v dt - C⁻¹ i dt + C⁻¹ sqrt(2 κ₀) dW
//! ```
//!
//! `L = diag(L_k)`, `R = diag(R_k)`, `C` the Maxwell capacitance matrix
//! (`C_ii = C_ii,ground + Σ_j c_ij`, `C_ij = -s_ij c_ij`). With equal `R` and
//! equal `κ₀` the stationary law is Gibbs: `v ~ N(0, κ₀ R C⁻¹)`,
//! `i ~ N(0, κ₀ R L⁻¹)`, independent.
//!
//! **Simulation.** The `(i, v)` system is a linear SDE; it is simulated
//! *exactly* at the ADC sampling instants: `x_{k+1} = Φ x_k + Q^{1/2} ξ_k`
//! with `Φ = e^{A h}` and `Q = ∫_0^h e^{As} B Bᵀ e^{Aᵀs} ds` from one matrix
//! exponential of Van Loan's block matrix ([`crate::ou::van_loan`], computed
//! here in a rescaled state so the blocks are O(1)). The stationary covariance
//! of the realised circuit solves the Lyapunov equation
//! ([`crate::ou::stationary_covariance`]). No time-discretisation bias.
//!
//! **Programming.** To make the voltage covariance proportional to `M⁻¹`
//! (sampling: `M = Σ⁻¹`; inversion: `M = A`) the device realises
//! `C = α D M D` with a positive diagonal `D` (undone digitally on readout).
//! Physical ground capacitances must be non-negative, so `D M D` must be
//! diagonally dominant: `D = diag(⟨M⟩⁻¹ 1)` with the comparison matrix
//! `⟨M⟩` (|diagonal|, -|off-diagonal|) works exactly when `M` is an
//! H-matrix; otherwise programming fails with a clear error. Signs: a
//! coupling of either sign is assumed available (a capacitor to the node or
//! to an inverted copy of it, `s_ij = ±1`); the published device's sign
//! mechanism is not reproduced. `α` maps the largest element to the top of
//! the capacitor bank.
//!
//! **Non-idealities** ([`SpuConfig`]):
//! * component mismatch: every L, R, capacitor and noise-source intensity is
//!   multiplied by `1 + u·tol/100`, `u ~ Uniform(-1, 1)`, drawn once per
//!   device ([`SpuConfig::mismatch_seed`]); unequal R makes the stationary
//!   law non-Gibbs, which the model reproduces because it simulates the SDE;
//! * finite capacitor bank: each ground/coupling capacitor is a
//!   binary-weighted bank of `bank_bits` bits, LSB `cap_max / (2^bits - 1)`;
//! * ADC: `adc_bits` resolution over ±`adc_full_scale` (clipping) at
//!   `sample_rate`;
//! * finite run time (and an optional burn-in from the reset state `x = 0`).
//!
//! **Default component values and energy model** (representative, chosen
//! for a well-mixed device; not measured values of the published PCB):
//! * `L = 1 mH`, `R = 200 Ω`, `cap_max = 10 nF`: resonance
//!   `1/(2π sqrt(LC)) ≈ 50 kHz` at 10 nF, quality factor
//!   `R sqrt(C/L) ≈ 0.6` (near-critical damping, so the voltages decorrelate
//!   within a few µs);
//! * `κ₀ = 1e-12 A²·s`: an *injected* (amplified) noise current; thermal
//!   noise `k_B T / R ≈ 2e-23 A²·s` would give µV signals. With ~5 nF this
//!   gives `sqrt(κ₀ R / C) ≈ 0.2 V` voltage spread, matched to a ±1 V, 12-bit
//!   ADC at 1 MS/s;
//! * power: per cell `E[v²]/R` dissipated in the resistor plus
//!   `static_power_per_cell = 1 mW` for the noise amplifier and ADC channel
//!   (order of magnitude of discrete parts; an assumption). Energy =
//!   power × run time.

#![allow(clippy::needless_range_loop)] // dense numerical kernels index several arrays at once

use faer::prelude::*;
use faer::{Mat, Side};
use langevin_core::rng::{chain_rng, fill_standard_normal, ChainRng};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ThermoError as Error};
use crate::linalg::check_spd;
use crate::ou::{self, inverse};

/// Relative Frobenius error `‖a - b‖_F / ‖b‖_F`.
pub fn rel_frobenius(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    let mut num = 0.0;
    let mut den = 0.0;
    for i in 0..b.nrows() {
        for j in 0..b.ncols() {
            num += (a[(i, j)] - b[(i, j)]).powi(2);
            den += b[(i, j)].powi(2);
        }
    }
    (num / den.max(1e-300)).sqrt()
}

/// A non-empty, finite, symmetric positive definite matrix.
fn check_spd_input(m: &Mat<f64>, what: &'static str) -> Result<()> {
    if m.nrows() == 0 {
        return Err(Error::DimensionMismatch {
            what,
            expected: 1,
            got: 0,
        });
    }
    check_spd(what, m.as_ref()).map(|_| ())
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// Component values and non-idealities of the simulated SPU (see module docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SpuConfig {
    /// Maximum number of unit cells (the published device has 8).
    pub max_cells: usize,
    /// Inductance per cell (H).
    pub inductance: f64,
    /// Resistance per cell (Ω).
    pub resistance: f64,
    /// Largest capacitance of one bank (F); the programmed matrix is scaled to it.
    pub cap_max: f64,
    /// Bits of each binary-weighted capacitor bank; `None`: continuous values.
    pub bank_bits: Option<u32>,
    /// Noise intensity κ₀ (A²·s).
    pub kappa0: f64,
    /// Component mismatch: uniform ±tolerance in percent.
    pub tolerance_pct: f64,
    /// Seed of the device's mismatch draw.
    pub mismatch_seed: u64,
    /// ADC resolution in bits; `None`: ideal readout.
    pub adc_bits: Option<u32>,
    /// ADC full scale (V): readings are clipped to ±full scale.
    pub adc_full_scale: f64,
    /// ADC sampling rate (Hz); also the simulation step.
    pub sample_rate: f64,
    /// Static power per cell (W): noise amplifier + ADC channel.
    pub static_power_per_cell: f64,
}

impl Default for SpuConfig {
    fn default() -> Self {
        Self {
            max_cells: 8,
            inductance: 1e-3,
            resistance: 200.0,
            cap_max: 10e-9,
            bank_bits: Some(8),
            kappa0: 1e-12,
            tolerance_pct: 1.0,
            mismatch_seed: 0,
            adc_bits: Some(12),
            adc_full_scale: 1.0,
            sample_rate: 1e6,
            static_power_per_cell: 1e-3,
        }
    }
}

impl SpuConfig {
    /// All non-idealities off (continuous capacitors, no mismatch, ideal ADC).
    pub fn ideal() -> Self {
        Self {
            bank_bits: None,
            tolerance_pct: 0.0,
            adc_bits: None,
            ..Self::default()
        }
    }

    /// Validate the configuration.
    pub fn validate(&self) -> Result<()> {
        let pos = |v: f64, field: &'static str| -> Result<()> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::InvalidConfig {
                    field,
                    reason: format!("must be finite and > 0, got {v}"),
                })
            }
        };
        pos(self.inductance, "inductance")?;
        pos(self.resistance, "resistance")?;
        pos(self.cap_max, "cap_max")?;
        pos(self.kappa0, "kappa0")?;
        pos(self.adc_full_scale, "adc_full_scale")?;
        pos(self.sample_rate, "sample_rate")?;
        if !(self.static_power_per_cell.is_finite() && self.static_power_per_cell >= 0.0) {
            return Err(Error::InvalidConfig {
                field: "static_power_per_cell",
                reason: "must be >= 0".into(),
            });
        }
        if !(self.tolerance_pct.is_finite() && (0.0..50.0).contains(&self.tolerance_pct)) {
            return Err(Error::InvalidConfig {
                field: "tolerance_pct",
                reason: format!("must be in [0, 50), got {}", self.tolerance_pct),
            });
        }
        if self.max_cells == 0 {
            return Err(Error::InvalidConfig {
                field: "max_cells",
                reason: "must be >= 1".into(),
            });
        }
        if let Some(b) = self.bank_bits {
            if !(1..=24).contains(&b) {
                return Err(Error::InvalidConfig {
                    field: "bank_bits",
                    reason: format!("must be in 1..=24, got {b}"),
                });
            }
        }
        if let Some(b) = self.adc_bits {
            if !(1..=24).contains(&b) {
                return Err(Error::InvalidConfig {
                    field: "adc_bits",
                    reason: format!("must be in 1..=24, got {b}"),
                });
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The programmed device
// ---------------------------------------------------------------------------

/// A programmed, component-level SPU instance.
#[derive(Clone, Debug)]
pub struct Spu {
    pub cfg: SpuConfig,
    /// Number of cells in use.
    pub n: usize,
    /// The matrix `M` the user asked for (voltage covariance ∝ M⁻¹).
    pub target: Mat<f64>,
    /// Digital rescaling `D` (voltages are multiplied by it on readout).
    pub d_scale: Vec<f64>,
    /// Scale α (F per unit of `D M D`).
    pub alpha: f64,
    /// Nominal (designed, before mismatch) Maxwell capacitance matrix (F).
    pub c_nominal: Mat<f64>,
    /// Realised Maxwell capacitance matrix, with bank quantisation and mismatch (F).
    pub c_actual: Mat<f64>,
    /// Realised L, R and noise intensity per cell.
    pub l_actual: Vec<f64>,
    pub r_actual: Vec<f64>,
    pub kappa_actual: Vec<f64>,
    // Exact one-sample transition in the scaled state z = x / s.
    phi: Mat<f64>,
    /// Square root of the transition covariance (lower Cholesky factor when definite).
    q_factor: Mat<f64>,
    state_scale: Vec<f64>,
    drift: Mat<f64>,
    bbt: Mat<f64>,
}

/// Result of one device run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SpuRun {
    /// ADC readings, one row of `n` voltages per sample (V).
    pub voltages: Vec<Vec<f64>>,
    /// Analog run time (s), burn-in included.
    pub analog_seconds: f64,
    /// Modelled energy (J).
    pub energy_joules: f64,
    /// Modelled average power (W).
    pub power_watts: f64,
}

fn quantise_bank(c: f64, lsb: Option<f64>) -> f64 {
    match lsb {
        Some(q) => (c / q).round() * q,
        None => c,
    }
}

impl Spu {
    /// Program the device so that its voltage covariance is `∝ M⁻¹` (see module docs).
    pub fn program(cfg: &SpuConfig, m: &Mat<f64>) -> Result<Spu> {
        cfg.validate()?;
        check_spd_input(m, "SPU target matrix")?;
        let n = m.nrows();
        if n > cfg.max_cells {
            return Err(Error::DimensionMismatch {
                what: "SPU cells (matrix size > max_cells)",
                expected: cfg.max_cells,
                got: n,
            });
        }
        // D from the comparison matrix: ⟨M⟩ d = 1, d > 0 iff M is an H-matrix.
        let comp = Mat::from_fn(n, n, |i, j| {
            if i == j {
                m[(i, i)].abs()
            } else {
                -m[(i, j)].abs()
            }
        });
        let ones = Mat::from_fn(n, 1, |_, _| 1.0);
        let dsol = comp.partial_piv_lu().solve(&ones);
        let d: Vec<f64> = (0..n).map(|i| dsol[(i, 0)]).collect();
        if d.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(Error::NotRealisable(
                "matrix not realisable on the SPU: no positive diagonal rescaling makes it diagonally dominant \
                 (the Maxwell capacitance matrix needs non-negative ground capacitances); pass an H-matrix, e.g. a diagonally dominant one"
                    .into(),
            ));
        }
        // Normalise D so that D M D has unit mean diagonal (only a convention).
        let mean_diag: f64 = (0..n).map(|i| d[i] * d[i] * m[(i, i)]).sum::<f64>() / n as f64;
        let d: Vec<f64> = d.iter().map(|v| v / mean_diag.sqrt()).collect();
        let dmd = Mat::from_fn(n, n, |i, j| d[i] * m[(i, j)] * d[j]);
        // Element values: ground_i = Σ_j dmd_ij s_ij... = dmd_ii - Σ_{j≠i} |dmd_ij|.
        let ground: Vec<f64> = (0..n)
            .map(|i| {
                dmd[(i, i)]
                    - (0..n)
                        .filter(|&j| j != i)
                        .map(|j| dmd[(i, j)].abs())
                        .sum::<f64>()
            })
            .collect();
        let largest = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| dmd[(i, j)].abs())
            .chain(ground.iter().copied())
            .fold(0.0, f64::max);
        let alpha = cfg.cap_max / largest;
        let lsb = cfg
            .bank_bits
            .map(|b| cfg.cap_max / ((1u64 << b) - 1) as f64);
        let mut rng = chain_rng(cfg.mismatch_seed, 7);
        let tol = cfg.tolerance_pct / 100.0;
        let jitter = |rng: &mut ChainRng| {
            if tol > 0.0 {
                1.0 + tol * (2.0 * rng.random::<f64>() - 1.0)
            } else {
                1.0
            }
        };
        let mut c_nom = Mat::<f64>::zeros(n, n);
        let mut c_act = Mat::<f64>::zeros(n, n);
        for i in 0..n {
            let g = quantise_bank(alpha * ground[i].max(0.0), lsb);
            c_nom[(i, i)] += g;
            c_act[(i, i)] += g * jitter(&mut rng);
        }
        for i in 0..n {
            for j in (i + 1)..n {
                let sign = if dmd[(i, j)] > 0.0 { 1.0 } else { -1.0 };
                let c = quantise_bank(alpha * dmd[(i, j)].abs(), lsb);
                if c == 0.0 {
                    continue;
                }
                let ca = c * jitter(&mut rng);
                for (mat, val) in [(&mut c_nom, c), (&mut c_act, ca)] {
                    mat[(i, i)] += val;
                    mat[(j, j)] += val;
                    mat[(i, j)] += sign * val;
                    mat[(j, i)] += sign * val;
                }
            }
        }
        if c_act.llt(Side::Lower).is_err() {
            return Err(Error::NotPositiveDefinite {
                what: "realised capacitance matrix",
                semi: false,
                detail: Some("capacitor bank too coarse?".into()),
            });
        }
        let l_actual: Vec<f64> = (0..n).map(|_| cfg.inductance * jitter(&mut rng)).collect();
        let r_actual: Vec<f64> = (0..n).map(|_| cfg.resistance * jitter(&mut rng)).collect();
        let kappa_actual: Vec<f64> = (0..n).map(|_| cfg.kappa0 * jitter(&mut rng)).collect();
        let mut spu = Spu {
            cfg: cfg.clone(),
            n,
            target: m.clone(),
            d_scale: d,
            alpha,
            c_nominal: c_nom,
            c_actual: c_act,
            l_actual,
            r_actual,
            kappa_actual,
            phi: Mat::zeros(0, 0),
            q_factor: Mat::zeros(0, 0),
            state_scale: Vec::new(),
            drift: Mat::zeros(0, 0),
            bbt: Mat::zeros(0, 0),
        };
        spu.build_transition()?;
        Ok(spu)
    }

    /// Drift and diffusion in the scaled state `z = x / s`, then the exact transition over one ADC period.
    fn build_transition(&mut self) -> Result<()> {
        let n = self.n;
        let cinv = inverse("realised capacitance matrix", self.c_actual.as_ref())?;
        let c0 = self.cfg.cap_max;
        let v0 = (self.cfg.kappa0 * self.cfg.resistance / c0).sqrt();
        let i0 = v0 * (c0 / self.cfg.inductance).sqrt();
        let t0 = (self.cfg.inductance * c0).sqrt();
        let s: Vec<f64> = (0..2 * n).map(|k| if k < n { i0 } else { v0 }).collect();
        // x = (i, v); A = [[0, L⁻¹], [-C⁻¹, -C⁻¹R⁻¹]]; B = [[0], [C⁻¹ sqrt(2κ)]]. Time unit t0.
        let mut a = Mat::<f64>::zeros(2 * n, 2 * n);
        for k in 0..n {
            a[(k, n + k)] = 1.0 / self.l_actual[k];
        }
        for r in 0..n {
            for c in 0..n {
                a[(n + r, c)] = -cinv[(r, c)];
                a[(n + r, n + c)] = -cinv[(r, c)] / self.r_actual[c];
            }
        }
        let mut bbt = Mat::<f64>::zeros(2 * n, 2 * n);
        for r in 0..n {
            for c in 0..n {
                let v: f64 = (0..n)
                    .map(|k| cinv[(r, k)] * 2.0 * self.kappa_actual[k] * cinv[(c, k)])
                    .sum();
                bbt[(n + r, n + c)] = v;
            }
        }
        // Scaled: A_z = S⁻¹ A S t0, BBᵀ_z = S⁻¹ BBᵀ S⁻¹ t0.
        let az = Mat::from_fn(2 * n, 2 * n, |r, c| a[(r, c)] * s[c] / s[r] * t0);
        let bz = Mat::from_fn(2 * n, 2 * n, |r, c| bbt[(r, c)] / (s[r] * s[c]) * t0);
        let h = 1.0 / self.cfg.sample_rate / t0;
        // dz = A_z z dt + ...: the OU kernel's drift is -A_z.
        let (phi, q) = ou::van_loan((-&az).as_ref(), bz.as_ref(), h);
        self.q_factor = ou::psd_factor("SPU transition covariance", q.as_ref())?.0;
        self.phi = phi;
        self.state_scale = s;
        self.drift = az;
        self.bbt = bz;
        Ok(())
    }

    /// `κ₀ R C⁻¹` with the nominal component values (the Gibbs voltage covariance the design intends).
    pub fn nominal_voltage_covariance(&self) -> Result<Mat<f64>> {
        let ci = inverse("nominal capacitance matrix", self.c_nominal.as_ref())?;
        let f = self.cfg.kappa0 * self.cfg.resistance;
        Ok(Mat::from_fn(self.n, self.n, |i, j| f * ci[(i, j)]))
    }

    /// Exact stationary voltage covariance of the *realised* circuit (mismatch
    /// and bank included; non-Gibbs when the R's differ), plus the ADC's
    /// quantisation variance `Δ²/12` on the diagonal (clipping ignored).
    pub fn realised_voltage_covariance(&self) -> Result<Mat<f64>> {
        let n = self.n;
        // A_z S + S A_zᵀ + BBᵀ_z = 0, i.e. the OU kernel's Lyapunov equation for -A_z.
        let s = ou::stationary_covariance((-&self.drift).as_ref(), self.bbt.as_ref())?;
        let q = self.adc_step().map_or(0.0, |d| d * d / 12.0);
        Ok(Mat::from_fn(n, n, |i, j| {
            s[(n + i, n + j)] * self.state_scale[n + i] * self.state_scale[n + j]
                + if i == j { q } else { 0.0 }
        }))
    }

    fn adc_step(&self) -> Option<f64> {
        self.cfg
            .adc_bits
            .map(|b| 2.0 * self.cfg.adc_full_scale / ((1u64 << b) as f64))
    }

    /// Factor turning a voltage covariance into an estimate of `M⁻¹`:
    /// `M⁻¹ ≈ (α / (κ₀ R)) D Cov(v) D` (nominal κ₀ and R).
    pub fn readout_factor(&self) -> f64 {
        self.alpha / (self.cfg.kappa0 * self.cfg.resistance)
    }

    /// Run the device from the reset state for `burn_in + duration` seconds and
    /// read the voltages through the ADC after the burn-in.
    pub fn run(&self, duration: f64, burn_in: f64, rng: &mut ChainRng) -> Result<SpuRun> {
        if !(duration.is_finite() && duration > 0.0 && burn_in.is_finite() && burn_in >= 0.0) {
            return Err(Error::InvalidConfig {
                field: "duration",
                reason: format!("need duration > 0 and burn_in >= 0, got {duration}, {burn_in}"),
            });
        }
        let n = self.n;
        let steps_burn = (burn_in * self.cfg.sample_rate).round() as usize;
        let steps = ((duration * self.cfg.sample_rate).round() as usize).max(2);
        if steps > 50_000_000 {
            return Err(Error::InvalidConfig {
                field: "duration",
                reason: format!("{steps} ADC samples is too many (limit 5e7)"),
            });
        }
        let m = 2 * n;
        let mut z = vec![0.0; m];
        let mut xi = vec![0.0; m];
        let mut zn = vec![0.0; m];
        let mut out = Vec::with_capacity(steps);
        let step = self.adc_step();
        let fs = self.cfg.adc_full_scale;
        let mut vsq = 0.0;
        for k in 0..steps_burn + steps {
            fill_standard_normal(rng, &mut xi);
            for r in 0..m {
                let mut acc = 0.0;
                for c in 0..m {
                    acc += self.phi[(r, c)] * z[c];
                }
                for c in 0..m {
                    acc += self.q_factor[(r, c)] * xi[c];
                }
                zn[r] = acc;
            }
            std::mem::swap(&mut z, &mut zn);
            if k >= steps_burn {
                let v: Vec<f64> = (0..n)
                    .map(|i| {
                        let raw = z[n + i] * self.state_scale[n + i];
                        vsq += raw * raw / self.r_actual[i];
                        match step {
                            Some(d) => ((raw / d).round() * d).clamp(-fs, fs),
                            None => raw,
                        }
                    })
                    .collect();
                out.push(v);
            }
        }
        let total = (steps_burn + steps) as f64 / self.cfg.sample_rate;
        let power = vsq / steps as f64 + n as f64 * self.cfg.static_power_per_cell;
        Ok(SpuRun {
            voltages: out,
            analog_seconds: total,
            energy_joules: power * total,
            power_watts: power,
        })
    }

    /// Estimate `M⁻¹` from the first `count` readings of a run: `(α/κ₀R) D Ĉov(v) D`.
    pub fn estimate_inverse(&self, run: &SpuRun, count: usize) -> Mat<f64> {
        let cov = sample_covariance(&run.voltages[..count.min(run.voltages.len())]);
        let f = self.readout_factor();
        Mat::from_fn(self.n, self.n, |i, j| {
            f * self.d_scale[i] * cov[(i, j)] * self.d_scale[j]
        })
    }

    /// Map readings to samples of `N(0, M⁻¹)`: `x = sqrt(α/κ₀R) D v`.
    pub fn samples(&self, run: &SpuRun) -> Vec<Vec<f64>> {
        let f = self.readout_factor().sqrt();
        run.voltages
            .iter()
            .map(|v| {
                v.iter()
                    .zip(&self.d_scale)
                    .map(|(a, d)| f * d * a)
                    .collect()
            })
            .collect()
    }
}

/// Sample covariance (about the sample mean) of rows.
pub fn sample_covariance(rows: &[Vec<f64>]) -> Mat<f64> {
    let n = rows.first().map_or(0, |r| r.len());
    let k = rows.len().max(2) as f64;
    let mut mean = vec![0.0; n];
    for r in rows {
        for i in 0..n {
            mean[i] += r[i] / rows.len() as f64;
        }
    }
    let mut c = Mat::<f64>::zeros(n, n);
    for r in rows {
        for i in 0..n {
            for j in 0..=i {
                c[(i, j)] += (r[i] - mean[i]) * (r[j] - mean[j]);
            }
        }
    }
    for i in 0..n {
        for j in 0..=i {
            c[(i, j)] /= k - 1.0;
            c[(j, i)] = c[(i, j)];
        }
    }
    c
}

// ---------------------------------------------------------------------------
// Demonstrations: sampling and inversion, error versus run time
// ---------------------------------------------------------------------------

/// What the device is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpuTask {
    /// Sample `N(0, Σ)`: program `M = Σ⁻¹`, compare the sample covariance to Σ.
    Sample,
    /// Invert `A`: program `M = A`, compare the estimate to `A⁻¹`.
    Invert,
}

/// Error versus run time for one device configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorCurve {
    pub label: String,
    /// Run times (s, after burn-in).
    pub run_seconds: Vec<f64>,
    /// Mean relative Frobenius error over seeds at each run time.
    pub mean_error: Vec<f64>,
    /// Standard error of that mean.
    pub se_error: Vec<f64>,
    /// Error of the realised circuit's exact stationary covariance (the floor, no sampling error).
    pub floor: f64,
    /// Modelled energy of the longest run (J) and its power (W).
    pub energy_joules: f64,
    pub power_watts: f64,
}

/// Program a device for `task` on the problem matrix `p` (Σ for sampling, A for inversion).
pub fn program_for(cfg: &SpuConfig, task: SpuTask, p: &Mat<f64>) -> Result<Spu> {
    check_spd_input(p, "problem matrix")?;
    let m = match task {
        SpuTask::Sample => inverse("problem matrix", p.as_ref())?,
        SpuTask::Invert => p.clone(),
    };
    let m = Mat::from_fn(m.nrows(), m.ncols(), |i, j| 0.5 * (m[(i, j)] + m[(j, i)]));
    Spu::program(cfg, &m)
}

/// A reproducible random symmetric, diagonally dominant (hence SPD and
/// realisable) test matrix of size `n` with condition number of order 10.
pub fn random_dd_matrix(n: usize, seed: u64) -> Mat<f64> {
    let mut rng = chain_rng(seed, 11);
    let mut m = Mat::<f64>::zeros(n, n);
    for i in 0..n {
        for j in (i + 1)..n {
            let v = (2.0 * rng.random::<f64>() - 1.0) / (n as f64 - 1.0).max(1.0);
            m[(i, j)] = v;
            m[(j, i)] = v;
        }
    }
    for i in 0..n {
        let off: f64 = (0..n).filter(|&j| j != i).map(|j| m[(i, j)].abs()).sum();
        m[(i, i)] = off + 0.1 + 0.5 * rng.random::<f64>();
    }
    m
}

/// For the problem matrix `p` (Σ for sampling, A for inversion), run the device
/// for the longest of `run_seconds` (after `burn_in`) with `seeds` noise seeds
/// and measure the error of the estimate from each prefix.
pub fn error_vs_time(
    cfg: &SpuConfig,
    task: SpuTask,
    p: &Mat<f64>,
    run_seconds: &[f64],
    burn_in: f64,
    seeds: u64,
    label: &str,
) -> Result<ErrorCurve> {
    check_spd_input(p, "problem matrix")?;
    if run_seconds.is_empty() || seeds == 0 {
        return Err(Error::InvalidConfig {
            field: "run_seconds/seeds",
            reason: "need at least one run time and one seed".into(),
        });
    }
    let (m, truth) = match task {
        SpuTask::Sample => (inverse("problem matrix", p.as_ref())?, p.clone()),
        SpuTask::Invert => (p.clone(), inverse("problem matrix", p.as_ref())?),
    };
    let m = Mat::from_fn(m.nrows(), m.ncols(), |i, j| 0.5 * (m[(i, j)] + m[(j, i)]));
    let spu = Spu::program(cfg, &m)?;
    let tmax = run_seconds.iter().cloned().fold(0.0, f64::max);
    let realised = spu.realised_voltage_covariance()?;
    let f = spu.readout_factor();
    let floor_est = Mat::from_fn(spu.n, spu.n, |i, j| {
        f * spu.d_scale[i] * realised[(i, j)] * spu.d_scale[j]
    });
    let floor = rel_frobenius(&floor_est, &truth);
    let mut errs = vec![Vec::new(); run_seconds.len()];
    let (mut energy, mut power) = (0.0, 0.0);
    for s in 0..seeds {
        let mut rng = chain_rng(s, 100);
        let run = spu.run(tmax, burn_in, &mut rng)?;
        energy = run.energy_joules;
        power = run.power_watts;
        for (k, &t) in run_seconds.iter().enumerate() {
            let count = ((t * cfg.sample_rate).round() as usize).max(2);
            let est = spu.estimate_inverse(&run, count);
            errs[k].push(rel_frobenius(&est, &truth));
        }
    }
    let mean_error: Vec<f64> = errs
        .iter()
        .map(|e| e.iter().sum::<f64>() / e.len() as f64)
        .collect();
    let se_error = errs
        .iter()
        .zip(&mean_error)
        .map(|(e, m)| {
            if e.len() < 2 {
                return f64::NAN;
            }
            (e.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (e.len() - 1) as f64 / e.len() as f64)
                .sqrt()
        })
        .collect();
    Ok(ErrorCurve {
        label: label.to_string(),
        run_seconds: run_seconds.to_vec(),
        mean_error,
        se_error,
        floor,
        energy_joules: energy,
        power_watts: power,
    })
}

// ---------------------------------------------------------------------------
// Predictive uncertainty for a small classifier
// ---------------------------------------------------------------------------

/// Result of the last-layer Bayesian classifier demo.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassifierReport {
    pub n_weights: usize,
    /// Prior precision used (the smallest power of two ≥ 1 whose Laplace precision the SPU can realise).
    pub prior_precision: f64,
    pub n_train: usize,
    pub test_accuracy_map: f64,
    pub test_accuracy_spu: f64,
    pub test_nll_map: f64,
    pub test_nll_spu: f64,
    pub test_nll_exact: f64,
    /// Mean predictive entropy (nats) on in-distribution test points / far-away points.
    pub entropy_in_spu: f64,
    pub entropy_far_spu: f64,
    pub entropy_far_map: f64,
    /// Max |p_spu - p_exact| over test points (p_exact from exact Laplace samples).
    pub max_abs_prob_diff: f64,
    /// Relative Frobenius error of the SPU sample covariance to the Laplace covariance.
    pub cov_rel_error: f64,
    pub analog_seconds: f64,
    pub energy_joules: f64,
    /// Test points (x, y, label) and the SPU predictive probability of class 1.
    pub test_points: Vec<(f64, f64, usize)>,
    pub p_spu: Vec<f64>,
}

fn sigmoid(a: f64) -> f64 {
    if a >= 0.0 {
        1.0 / (1.0 + (-a).exp())
    } else {
        let e = a.exp();
        e / (1.0 + e)
    }
}

/// Two-class 2-D toy problem; a frozen random tanh layer gives 7 centred
/// features (+ bias = 8 last-layer weights). Fit the MAP by Newton, take the
/// Laplace posterior `N(w_MAP, P⁻¹)`, sample it on the SPU (program `P`), and
/// compare the predictive with the exact Laplace predictive and the MAP plug-in.
pub fn classifier_demo(cfg: &SpuConfig, duration: f64, seed: u64) -> Result<ClassifierReport> {
    let nw = cfg.max_cells.min(8);
    if nw < 2 {
        return Err(Error::InvalidConfig {
            field: "max_cells",
            reason: "classifier demo needs >= 2 cells".into(),
        });
    }
    let nf = nw - 1;
    let mut rng = chain_rng(seed, 21);
    let gen = |rng: &mut ChainRng, count: usize| -> Vec<(f64, f64, usize)> {
        (0..count)
            .map(|k| {
                let c = k % 2;
                let mut z = [0.0; 2];
                fill_standard_normal(rng, &mut z);
                let (mx, my) = if c == 0 { (-1.0, -0.5) } else { (1.0, 0.5) };
                (mx + 0.9 * z[0], my + 0.9 * z[1], c)
            })
            .collect()
    };
    let train = gen(&mut rng, 60);
    let test = gen(&mut rng, 200);
    let mut wl = vec![0.0; nf * 3];
    fill_standard_normal(&mut rng, &mut wl);
    let raw = |x: f64, y: f64| -> Vec<f64> {
        (0..nf)
            .map(|k| (wl[3 * k] * x + wl[3 * k + 1] * y + 0.5 * wl[3 * k + 2]).tanh())
            .collect()
    };
    let mut mean = vec![0.0; nf];
    for &(x, y, _) in &train {
        for (m, v) in mean.iter_mut().zip(raw(x, y)) {
            *m += v / train.len() as f64;
        }
    }
    let feat = |x: f64, y: f64| -> Vec<f64> {
        let mut f: Vec<f64> = raw(x, y).iter().zip(&mean).map(|(a, m)| a - m).collect();
        f.push(1.0);
        f
    };
    // The SPU realises only H-matrices (non-negative ground capacitances):
    // start from a unit prior precision and double it until the Laplace
    // precision is realisable; the value used is reported.
    let mut prior_prec = 0.5;
    let mut attempt = 0;
    let (spu, w, prec) = loop {
        prior_prec *= 2.0;
        attempt += 1;
        let phi: Vec<Vec<f64>> = train.iter().map(|&(x, y, _)| feat(x, y)).collect();
        let mut w = vec![0.0; nw];
        let mut prec = Mat::<f64>::zeros(nw, nw);
        for _ in 0..50 {
            let mut g: Vec<f64> = w.iter().map(|v| -prior_prec * v).collect();
            prec = Mat::from_fn(nw, nw, |i, j| if i == j { prior_prec } else { 0.0 });
            for (f, &(_, _, c)) in phi.iter().zip(&train) {
                let p = sigmoid(f.iter().zip(&w).map(|(a, b)| a * b).sum());
                for i in 0..nw {
                    g[i] += (c as f64 - p) * f[i];
                    for j in 0..nw {
                        prec[(i, j)] += p * (1.0 - p) * f[i] * f[j];
                    }
                }
            }
            let step = prec
                .llt(Side::Lower)
                .map_err(|_| Error::NotPositiveDefinite {
                    what: "Laplace precision",
                    semi: false,
                    detail: None,
                })?
                .solve(Mat::from_fn(nw, 1, |i, _| g[i]));
            let mut maxs = 0.0f64;
            for i in 0..nw {
                w[i] += step[(i, 0)];
                maxs = maxs.max(step[(i, 0)].abs());
            }
            if maxs < 1e-10 {
                break;
            }
        }
        match Spu::program(cfg, &prec) {
            Ok(s) => break (s, w, prec),
            Err(e) if attempt >= 12 => return Err(e),
            Err(_) => continue,
        }
    };
    let mut srng = chain_rng(seed, 22);
    let run = spu.run(duration, 20.0 / cfg.sample_rate, &mut srng)?;
    let draws = spu.samples(&run);
    let cov_true = inverse("Laplace precision", prec.as_ref())?;
    let cov_rel_error = rel_frobenius(&sample_covariance(&draws), &cov_true);
    // Exact Laplace draws for reference.
    let lchol = cov_true
        .llt(Side::Lower)
        .map_err(|_| Error::NotPositiveDefinite {
            what: "Laplace covariance",
            semi: false,
            detail: None,
        })?;
    let lmat = lchol.L().to_owned();
    let mut erng = chain_rng(seed, 23);
    let n_exact = 4000;
    let exact: Vec<Vec<f64>> = (0..n_exact)
        .map(|_| {
            let mut z = vec![0.0; nw];
            fill_standard_normal(&mut erng, &mut z);
            (0..nw)
                .map(|i| (0..=i).map(|j| lmat[(i, j)] * z[j]).sum())
                .collect()
        })
        .collect();
    let predict = |f: &[f64], ds: &[Vec<f64>]| -> f64 {
        ds.iter()
            .map(|d| {
                sigmoid(
                    f.iter()
                        .zip(w.iter().zip(d))
                        .map(|(a, (m, e))| a * (m + e))
                        .sum(),
                )
            })
            .sum::<f64>()
            / ds.len() as f64
    };
    let map_p = |f: &[f64]| sigmoid(f.iter().zip(&w).map(|(a, b)| a * b).sum());
    let ent = |p: f64| {
        let p = p.clamp(1e-12, 1.0 - 1e-12);
        -(p * p.ln() + (1.0 - p) * (1.0 - p).ln())
    };
    let nll = |p: f64, c: usize| -(if c == 1 { p } else { 1.0 - p }).clamp(1e-12, 1.0).ln();
    let (mut acc_map, mut acc_spu, mut nll_map, mut nll_spu, mut nll_ex, mut ent_in, mut maxd) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0f64);
    let mut p_spu = Vec::new();
    for &(x, y, c) in &test {
        let f = feat(x, y);
        let (pm, ps, pe) = (map_p(&f), predict(&f, &draws), predict(&f, &exact));
        acc_map += f64::from(u8::from((pm > 0.5) == (c == 1)));
        acc_spu += f64::from(u8::from((ps > 0.5) == (c == 1)));
        nll_map += nll(pm, c);
        nll_spu += nll(ps, c);
        nll_ex += nll(pe, c);
        ent_in += ent(ps);
        maxd = maxd.max((ps - pe).abs());
        p_spu.push(ps);
    }
    let nt = test.len() as f64;
    let far: Vec<(f64, f64)> = (0..50)
        .map(|k| {
            let a = k as f64 * std::f64::consts::TAU / 50.0;
            (6.0 * a.cos(), 6.0 * a.sin())
        })
        .collect();
    let ent_far_spu = far
        .iter()
        .map(|&(x, y)| ent(predict(&feat(x, y), &draws)))
        .sum::<f64>()
        / far.len() as f64;
    let ent_far_map = far
        .iter()
        .map(|&(x, y)| ent(map_p(&feat(x, y))))
        .sum::<f64>()
        / far.len() as f64;
    Ok(ClassifierReport {
        n_weights: nw,
        prior_precision: prior_prec,
        n_train: train.len(),
        test_accuracy_map: acc_map / nt,
        test_accuracy_spu: acc_spu / nt,
        test_nll_map: nll_map / nt,
        test_nll_spu: nll_spu / nt,
        test_nll_exact: nll_ex / nt,
        entropy_in_spu: ent_in / nt,
        entropy_far_spu: ent_far_spu,
        entropy_far_map: ent_far_map,
        max_abs_prob_diff: maxd,
        cov_rel_error,
        analog_seconds: run.analog_seconds,
        energy_joules: run.energy_joules,
        test_points: test,
        p_spu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ideal_device_programs_exactly_and_is_gibbs() {
        let m = random_dd_matrix(4, 3);
        let spu = Spu::program(&SpuConfig::ideal(), &m).unwrap();
        // Realised covariance (Lyapunov of the full RLC SDE) equals κ₀ R C⁻¹.
        let real = spu.realised_voltage_covariance().unwrap();
        let nom = spu.nominal_voltage_covariance().unwrap();
        assert!(
            rel_frobenius(&real, &nom) < 1e-9,
            "{}",
            rel_frobenius(&real, &nom)
        );
        let f = spu.readout_factor();
        let est = Mat::from_fn(4, 4, |i, j| {
            f * spu.d_scale[i] * real[(i, j)] * spu.d_scale[j]
        });
        assert!(rel_frobenius(&est, &inverse("m", m.as_ref()).unwrap()) < 1e-9);
    }

    #[test]
    fn non_h_matrix_is_rejected_with_error() {
        // SPD but not an H-matrix: all off-diagonals 0.9 on 3x3 with unit diagonal... comparison matrix singular-ish.
        let m = Mat::from_fn(3, 3, |i, j| if i == j { 1.0 } else { 0.6 });
        assert!(m.llt(Side::Lower).is_ok());
        assert!(Spu::program(&SpuConfig::ideal(), &m).is_err());
        let bad = Mat::from_fn(9, 9, |i, j| if i == j { 1.0 } else { 0.0 });
        assert!(Spu::program(&SpuConfig::ideal(), &bad).is_err());
    }
}
