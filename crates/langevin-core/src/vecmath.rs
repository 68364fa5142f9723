//! Branch-free `exp`, `log1p` (with the reciprocal a sigmoid needs), and
//! f32 `ln`/`sin`/`cos` for Box–Muller normals, written so the compiler
//! vectorises loops over them (libm's scalar calls do not vectorise). Used
//! for every transform's noise ([`crate::rng::fill_standard_normal`]), the
//! VI standard deviations and the batched logistic density of
//! `langevin::sgmcmc`.
//!
//! Accuracy (tested below): the f64 functions within 1e-15 relative of libm
//! on the ranges used; the f32 ones within a few f32 ulp. Every polynomial
//! step is `mul_add`, a correctly rounded fused multiply-add on every target
//! (hardware FMA where available, a slower library call otherwise), and the
//! rest are IEEE operations, so the results are the same bits on every
//! machine and in the AVX-512, AVX2 and portable versions of a loop.

/// ln 2 split so that `k · LN2_HI` is exact for `|k| < 2^11` (fdlibm).
const LN2_HI: f64 = 0.6931471803691238;
const LN2_LO: f64 = 1.9082149292705877e-10;
/// 1.5 · 2^52: adding it rounds to an integer held in the low mantissa bits.
const SHIFT: f64 = 6_755_399_441_055_744.0;
/// Bits of 1.0.
const ONE_BITS: u64 = 0x3FF0_0000_0000_0000;

/// The shared core of [`exp_nonpositive`] and [`exp`] for a clamped `x`:
/// `(p, k, t)` with `exp(x) = p · 2^k`, `p = exp(r)` for the remainder
/// `|r| ≤ ln2 / 2`, and `t = x log2(e) + SHIFT` (k in its low mantissa bits).
#[inline(always)]
fn exp_parts(x: f64) -> (f64, f64, f64) {
    let t = x * std::f64::consts::LOG2_E + SHIFT;
    let k = t - SHIFT;
    // |r| ≤ ln2 / 2
    let r = k.mul_add(-LN2_LO, k.mul_add(-LN2_HI, x));
    // exp(r): Taylor series to r^13 (truncation < 4e-18 relative).
    let mut p: f64 = 1.0 / 6_227_020_800.0;
    p = p.mul_add(r, 1.0 / 479_001_600.0);
    p = p.mul_add(r, 1.0 / 39_916_800.0);
    p = p.mul_add(r, 1.0 / 3_628_800.0);
    p = p.mul_add(r, 1.0 / 362_880.0);
    p = p.mul_add(r, 1.0 / 40_320.0);
    p = p.mul_add(r, 1.0 / 5_040.0);
    p = p.mul_add(r, 1.0 / 720.0);
    p = p.mul_add(r, 1.0 / 120.0);
    p = p.mul_add(r, 1.0 / 24.0);
    p = p.mul_add(r, 1.0 / 6.0);
    p = p.mul_add(r, 0.5);
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    (p, k, t)
}

/// `exp(x)` for `x ≤ 0` (NaN stays NaN; x < −708 is treated as −708, i.e. a
/// result ≤ 3.3e−308 instead of a smaller or zero one).
#[inline(always)]
pub fn exp_nonpositive(x: f64) -> f64 {
    let x = if x < -708.0 { -708.0 } else { x };
    let (p, _, t) = exp_parts(x);
    // 2^k: k (≥ −1022) sits in the low bits of t's mantissa.
    let two_k = f64::from_bits(ONE_BITS.wrapping_add(t.to_bits() << 52));
    p * two_k
}

/// `2^k` for an integer-valued `k ∈ [−1022, 1023]`, from bits.
#[inline(always)]
fn pow2i(k: f64) -> f64 {
    // (k + SHIFT)'s low mantissa bits hold 2^51 + k; adding the bias and
    // shifting leaves (k + 1023) in the exponent field.
    f64::from_bits((k + SHIFT).to_bits().wrapping_add(1023) << 52)
}

/// `exp(x)` for every `x`: within 1e−15 relative of libm for normal
/// results, correctly overflowing to `inf` (x > 709.78) and underflowing
/// through the subnormals to 0; NaN stays NaN. Branch-free, so loops over
/// it vectorise.
#[inline(always)]
pub fn exp(x: f64) -> f64 {
    // Outside [−746, 710] the result is 0 or inf anyway.
    let (p, k, _) = exp_parts(x.clamp(-746.0, 710.0));
    // 2^k in two factors (k ∈ [−1077, 1025] does not fit one exponent):
    // the last product rounds once, into the subnormals or to inf.
    let h = (0.5 * k + SHIFT) - SHIFT;
    p * pow2i(h) * pow2i(k - h)
}

/// `exp` over a slice, in place (vectorised where the CPU allows).
pub fn exp_in_place(xs: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { exp_in_place_avx2(xs) };
            return;
        }
    }
    xs.iter_mut().for_each(|x| *x = exp(*x));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_in_place_avx2(xs: &mut [f64]) {
    xs.iter_mut().for_each(|x| *x = exp(*x));
}

/// Whether the CPU has what the `avx2,fma` versions of the loops here (and
/// in `langevin::sgmcmc::batched_logistic`) are compiled for.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Whether the CPU has what the `avx512f,avx512vl,avx512dq,avx2,fma`
/// versions of the loops are compiled for.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && has_avx2_fma()
}

/// fdlibm's `log(2^k (1 + f)) = k ln2 + log(1 + f)` for `1 + f ∈ (√½, √2]`,
/// given `s = f / (2 + f)`, plus a first-order correction `c` (added before
/// rounding).
#[inline(always)]
fn log_reduced(s: f64, f: f64, k: f64, c: f64) -> f64 {
    const LG1: f64 = 0.6666666666666735;
    const LG2: f64 = 0.3999999999940942;
    const LG3: f64 = 0.2857142874366239;
    const LG4: f64 = 0.22222198432149784;
    const LG5: f64 = 0.1818357216161805;
    const LG6: f64 = 0.15313837699209373;
    const LG7: f64 = 0.14798198605116586;
    let z = s * s;
    let mut r = LG7;
    r = r.mul_add(z, LG6);
    r = r.mul_add(z, LG5);
    r = r.mul_add(z, LG4);
    r = r.mul_add(z, LG3);
    r = r.mul_add(z, LG2);
    r = r.mul_add(z, LG1);
    r *= z;
    let hfsq = 0.5 * f * f;
    k * LN2_HI - ((hfsq - (s * (hfsq + r) + (k * LN2_LO + c))) - f)
}

/// `(log1p(e), 1 / (1 + e))` for `e ∈ [0, 1]` (a softplus and a sigmoid
/// share them), with one division for both. NaN stays NaN.
#[inline(always)]
pub fn log1p_recip(e: f64) -> (f64, f64) {
    let u = 1.0 + e;
    let big = u > std::f64::consts::SQRT_2;
    let f = if big { 0.5 * u - 1.0 } else { u - 1.0 }; // exact
    let k = if big { 1.0 } else { 0.0 };
    // 1/u and 1/(2 + f) from the one reciprocal of their product.
    let w = 2.0 + f;
    let q = 1.0 / (u * w);
    let inv_u = q * w;
    let s = f * (q * u);
    // log(1 + e) = log(u) + c, c = (e − (u − 1)) / u: the rounding of u.
    let c = (e - (u - 1.0)) * inv_u;
    (log_reduced(s, f, k, c), inv_u)
}

/// `ln u` for a positive normal f32 `u` (Cephes' `logf`: a degree-9
/// polynomial on `[√½, √2)`, within 2 ulp).
#[inline(always)]
fn ln_f32(u: f32) -> f32 {
    let b = u.to_bits();
    let e = ((b >> 23) as i32 - 127) as f32;
    let m = f32::from_bits((b & 0x007F_FFFF) | 0x3F80_0000); // [1, 2)
    let big = m > std::f32::consts::SQRT_2;
    let x = if big { 0.5 * m - 1.0 } else { m - 1.0 }; // exact
    let e = if big { e + 1.0 } else { e };
    let z = x * x;
    let mut p: f32 = 7.037_683_6e-2;
    p = p.mul_add(x, -1.151_461e-1);
    p = p.mul_add(x, 1.167_699_9e-1);
    p = p.mul_add(x, -1.242_014_1e-1);
    p = p.mul_add(x, 1.424_932_3e-1);
    p = p.mul_add(x, -1.666_805_8e-1);
    p = p.mul_add(x, 2.000_071_5e-1);
    p = p.mul_add(x, -2.499_999_4e-1);
    p = p.mul_add(x, 3.333_333e-1);
    // ln 2 = 0.693359375 − 2.12194440e−4, the first part exact in f32.
    let y = e.mul_add(-2.121_944_4e-4, (p * x) * z);
    let y = z.mul_add(-0.5, y);
    e.mul_add(0.693_359_4, x + y)
}

/// `(cos 2πt, sin 2πt)` in f32 for `t ∈ [0, 1]`.
#[inline(always)]
fn cos_sin_turns_f32(t: f32) -> (f32, f32) {
    // Nearest quarter turn q ∈ {0, …, 4} (1.5·2^23 rounds to an integer).
    const SHIFT32: f32 = 12_582_912.0;
    let q = (4.0 * t + SHIFT32) - SHIFT32;
    let x = std::f32::consts::TAU * (0.25f32).mul_add(-q, t); // |x| ≤ π/4
    let x2 = x * x;
    // Taylor series: sin to x^11, cos to x^12 (truncation < 1e-10).
    let mut s: f32 = -1.0 / 39_916_800.0;
    s = s.mul_add(x2, 1.0 / 362_880.0);
    s = s.mul_add(x2, -1.0 / 5_040.0);
    s = s.mul_add(x2, 1.0 / 120.0);
    s = s.mul_add(x2, -1.0 / 6.0);
    let sin = (x * x2).mul_add(s, x);
    let mut c: f32 = 1.0 / 479_001_600.0;
    c = c.mul_add(x2, -1.0 / 3_628_800.0);
    c = c.mul_add(x2, 1.0 / 40_320.0);
    c = c.mul_add(x2, -1.0 / 720.0);
    c = c.mul_add(x2, 1.0 / 24.0);
    c = c.mul_add(x2, -0.5);
    let cos = x2.mul_add(c, 1.0);
    // Rotate by q quarter turns (q = 4 is a full turn).
    let (q1, q2, q3) = (q == 1.0, q == 2.0, q == 3.0);
    let co = if q1 {
        -sin
    } else if q2 {
        -cos
    } else if q3 {
        sin
    } else {
        cos
    };
    let si = if q1 {
        cos
    } else if q2 {
        -sin
    } else if q3 {
        -cos
    } else {
        sin
    };
    (co, si)
}

/// 2^−32.
const TWO_M32: f32 = 1.0 / 4_294_967_296.0;

/// Two standard normals from one 64-bit draw: Box–Muller in f32 on the
/// 32-bit uniforms `u₁ = (lo + 1)·2⁻³² ∈ (0, 1]` and `u₂ = hi·2⁻³² ∈ [0, 1]`
/// (`lo`, `hi` the word's halves, converted to f32 with rounding):
/// `r = sqrt(−2 ln u₁)`, `(r cos 2πu₂, r sin 2πu₂)`. `|z| ≤ 6.66`
/// (`u₁ ≥ 2⁻³²`): the tail beyond has probability 2.7e−11.
#[inline(always)]
fn box_muller_word(w: u64) -> (f32, f32) {
    let u1 = ((w as u32) as f32).mul_add(TWO_M32, TWO_M32);
    let u2 = (((w >> 32) as u32) as f32) * TWO_M32;
    let r = (-2.0 * ln_f32(u1)).sqrt();
    let (c, s) = cos_sin_turns_f32(u2);
    (r * c, r * s)
}

#[inline(always)]
fn box_muller_generic(words: &[u64], out: &mut [f64]) {
    for (&w, o) in words.iter().zip(out.chunks_exact_mut(2)) {
        let (z0, z1) = box_muller_word(w);
        o[0] = z0 as f64;
        o[1] = z1 as f64;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
unsafe fn box_muller_avx512(words: &[u64], out: &mut [f64]) {
    box_muller_generic(words, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn box_muller_avx2(words: &[u64], out: &mut [f64]) {
    box_muller_generic(words, out)
}

/// Standard normals from 64-bit draws, two per draw: `out[2j], out[2j+1]`
/// from `words[j]` (`out.len() == 2 * words.len()`).
///
/// The normals are computed in f32 (their values carry f32's 24-bit
/// precision, a relative perturbation below 1e−7 that no sampler can see
/// beside its discretisation error) and returned as f64. Every step is an
/// IEEE operation or `mul_add` (a correctly rounded fused multiply-add on
/// every target), so the AVX-512, AVX2 and portable versions of the loop give
/// the same bits.
pub fn box_muller(words: &[u64], out: &mut [f64]) {
    debug_assert!(out.len() == 2 * words.len());
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: the CPU supports these features (checked just above).
            unsafe { box_muller_avx512(words, out) };
            return;
        }
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { box_muller_avx2(words, out) };
            return;
        }
    }
    box_muller_generic(words, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
    }

    fn log1p_unit(e: f64) -> f64 {
        let (l, r) = log1p_recip(e);
        assert!(
            r.is_nan() || rel(r, 1.0 / (1.0 + e)) < 1e-15,
            "1/(1+{e}): {r}"
        );
        l
    }

    #[test]
    fn exp_log_sincos_match_libm() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (mut we, mut wl, mut wu, mut wc): (f64, f64, f64, f64) = (0.0, 0.0, 0.0, 0.0);
        for i in 0..200_000 {
            let x: f64 = -rng.random::<f64>() * if i % 2 == 0 { 40.0 } else { 708.0 };
            we = we.max(rel(exp_nonpositive(x), x.exp()));
            let e: f64 = if i % 3 == 0 {
                rng.random::<f64>()
            } else {
                (-rng.random::<f64>() * 700.0).exp()
            };
            wl = wl.max(rel(log1p_unit(e), e.ln_1p()));
            let u = if i % 2 == 0 {
                rng.random::<f32>()
            } else {
                1.0 - rng.random::<f32>() * 1e-4
            };
            if u > 0.0 && u != 1.0 {
                wu = wu.max(rel(ln_f32(u) as f64, (u as f64).ln()));
            }
            let t: f32 = rng.random();
            let (c, s) = cos_sin_turns_f32(t);
            let a = std::f64::consts::TAU * t as f64;
            wc = wc
                .max((c as f64 - a.cos()).abs())
                .max((s as f64 - a.sin()).abs());
        }
        assert!(we < 1e-15, "exp rel error {we}");
        assert!(wl < 1e-15, "log1p rel error {wl}");
        // f32: a few ulp (2^-23 = 1.2e-7).
        assert!(wu < 3e-7, "ln_f32 rel error {wu}");
        assert!(wc < 3e-7, "f32 sin/cos abs error {wc}");
        for x in [0.0, -0.0, -1e-300, -708.0, -0.5 * std::f64::consts::LN_2] {
            assert!(rel(exp_nonpositive(x), x.exp()) < 1e-15, "{x}");
        }
        assert!(exp_nonpositive(-1e4) > 0.0 && exp_nonpositive(-1e4) < 1e-307);
        // The general exp: normal range, overflow, subnormals, specials.
        let mut wg: f64 = 0.0;
        for i in 0..200_000 {
            let x: f64 = (rng.random::<f64>() - 0.5) * if i % 2 == 0 { 60.0 } else { 1415.0 };
            let x = x.min(709.7);
            wg = wg.max(rel(exp(x), x.exp()));
        }
        assert!(wg < 1e-15, "exp rel error {wg}");
        for x in [709.78, 709.79, 710.0, 1e300, f64::INFINITY] {
            assert_eq!(exp(x) == f64::INFINITY, x.exp() == f64::INFINITY, "{x}");
        }
        assert!(rel(exp(709.78), 709.78f64.exp()) < 1e-15);
        for x in [-708.5, -720.0, -740.0, -744.0] {
            // Subnormal results: within one subnormal ulp.
            assert!(
                (exp(x) - x.exp()).abs() <= 5e-324,
                "{x}: {} vs {}",
                exp(x),
                x.exp()
            );
        }
        assert_eq!(exp(-746.0), 0.0);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f64::NAN).is_nan());
        let mut v: Vec<f64> = (0..1000).map(|i| i as f64 * 0.37 - 200.0).collect();
        let want: Vec<f64> = v.iter().map(|&x| exp(x)).collect();
        exp_in_place(&mut v);
        assert_eq!(v, want, "exp_in_place must equal exp");
        for e in [1.0, 1e-300, f64::EPSILON, 0.414_213_56, 0.414_213_57] {
            assert!(rel(log1p_unit(e), e.ln_1p()) < 1e-15, "{e}");
        }
        assert_eq!(log1p_unit(0.0), 0.0);
        assert_eq!(ln_f32(1.0), 0.0);
        assert!((ln_f32(TWO_M32) / (-32.0 * std::f32::consts::LN_2) - 1.0).abs() < 2e-7);
        assert!(exp_nonpositive(f64::NAN).is_nan());
        assert!(log1p_unit(f64::NAN).is_nan());
        for (t, c, s) in [
            (0.0, 1.0, 0.0),
            (0.25, 0.0, 1.0),
            (0.5, -1.0, 0.0),
            (0.75, 0.0, -1.0),
        ] {
            let (cc, ss) = cos_sin_turns_f32(t);
            assert!((cc - c).abs() < 1e-7 && (ss - s).abs() < 1e-7, "{t}");
        }
    }

    /// Box–Muller from bulk draws: the libm formula on the same uniforms to
    /// f32 accuracy, the same bits whichever version of the loop runs, and
    /// standard normal moments within Monte Carlo error.
    #[test]
    fn box_muller_normals() {
        let n = 1 << 20;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut words = vec![0u64; n / 2];
        rng.fill(&mut words[..]);
        let mut z = vec![0.0; n];
        box_muller(&words, &mut z);
        let mut z2 = vec![0.0; n];
        box_muller_generic(&words, &mut z2);
        assert_eq!(z, z2, "dispatch must not change the bits");
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: feature checked just above.
            unsafe { box_muller_avx2(&words, &mut z2) };
            assert_eq!(z, z2, "AVX2 and the dispatched version differ");
        }
        let mut worst: f64 = 0.0;
        for (j, &w) in words.iter().enumerate() {
            // The f32 uniforms the transform uses, then libm in f64.
            let u1 = ((w as u32) as f32).mul_add(TWO_M32, TWO_M32) as f64;
            let u2 = (((w >> 32) as u32) as f32 * TWO_M32) as f64;
            let r = (-2.0 * u1.ln()).sqrt();
            let a = std::f64::consts::TAU * u2;
            worst = worst
                .max((z[2 * j] - r * a.cos()).abs())
                .max((z[2 * j + 1] - r * a.sin()).abs());
        }
        // f32 rounding of ln u1, the square root and sin/cos, times r ≤ 6.66.
        assert!(worst < 5e-6, "worst abs error {worst}");
        assert!(z.iter().all(|x| x.abs() <= 6.67));
        // The extreme words: u1 = 2^-32 (the largest radius) and u1 = 1.
        let mut e = [0.0; 2];
        box_muller(&[0], &mut e);
        let rmax = (64.0 * std::f64::consts::LN_2).sqrt();
        assert!((e[0] - rmax).abs() < 1e-5 && e[1] == 0.0, "{e:?}");
        box_muller(&[u32::MAX as u64], &mut e);
        assert_eq!(e, [0.0, 0.0]);
        let nf = n as f64;
        let m = z.iter().sum::<f64>() / nf;
        let v = z.iter().map(|x| x * x).sum::<f64>() / nf;
        let k4 = z.iter().map(|x| x.powi(4)).sum::<f64>() / nf;
        let tail = z.iter().filter(|x| x.abs() > 2.0).count() as f64 / nf;
        // Standard errors: mean 1/sqrt(n), E z² sqrt(2/n), E z⁴ sqrt(96/n).
        assert!(m.abs() < 5.0 / nf.sqrt(), "mean {m}");
        assert!((v - 1.0).abs() < 5.0 * (2.0 / nf).sqrt(), "var {v}");
        assert!((k4 - 3.0).abs() < 5.0 * (96.0 / nf).sqrt(), "E z^4 {k4}");
        let p2 = 0.045_500_263_896_358_4;
        assert!(
            (tail - p2).abs() < 5.0 * (p2 * (1.0 - p2) / nf).sqrt(),
            "tail {tail}"
        );
        // Pairs are uncorrelated.
        let c: f64 = z.chunks_exact(2).map(|p| p[0] * p[1]).sum::<f64>() / (nf / 2.0);
        assert!(c.abs() < 5.0 / (nf / 2.0).sqrt(), "pair correlation {c}");
    }
}
