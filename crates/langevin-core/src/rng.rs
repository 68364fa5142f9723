//! Explicit, seedable randomness.
//!
//! Every random operation takes the caller's generator; there is no global
//! RNG. [`ChainRng`] (ChaCha8) is serde-serialisable, so a checkpoint holds
//! the exact generator position. [`chain_rng`] gives chain `k` of a run its own
//! stream that depends only on `(seed, k)`, so results do not depend on the
//! number of threads.

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// The generator used across langevin (fast, portable, serialisable).
pub type ChainRng = rand_chacha::ChaCha8Rng;

/// The generator of chain `chain` of a run seeded with `seed`.
pub fn chain_rng(seed: u64, chain: u64) -> ChainRng {
    let mut r = ChainRng::seed_from_u64(seed);
    r.set_stream(chain);
    r
}

/// Normals are made in blocks of this many (even, so that Box–Muller pairs
/// never straddle two blocks): 16 KiB of words and normals stay in L1.
pub const NORMAL_BLOCK: usize = 1024;

/// Run `f(start, z)` on `d` independent standard normals, block by block:
/// `z` holds the normals of positions `start..start + z.len()`.
///
/// The normals come from 64-bit words drawn in bulk with `rng.fill` (one per
/// pair of normals, `⌈d/2⌉` words) and turned into normals by
/// [`crate::vecmath::box_muller`]: f32 Box–Muller on 32-bit uniforms,
/// `|z| ≤ 6.66` (a tail of probability 2.7e−11 is cut), values with f32's
/// precision. Blocking changes nothing in the stream: it is the same words
/// and the same normals as one bulk draw of `d` (so [`fill_standard_normal`]
/// of length `d` gives the same numbers), and the consumer loop reads the
/// normals from L1 instead of a `d`-long buffer. About 1.9 ns per normal,
/// ChaCha8 words included, on the AVX-512 machine of BENCHMARKS.md (a
/// ziggurat draw per normal cost ~9 ns on the earlier AVX2 machine).
pub fn for_each_normal_block<R: rand::Rng + ?Sized>(
    rng: &mut R,
    d: usize,
    mut f: impl FnMut(usize, &[f64]),
) {
    let mut words = [0u64; NORMAL_BLOCK / 2];
    let mut z = [0f64; NORMAL_BLOCK];
    let mut start = 0;
    while start < d {
        let n = (d - start).min(NORMAL_BLOCK);
        let w = n.div_ceil(2);
        rng.fill(&mut words[..w]);
        crate::vecmath::box_muller(&words[..w], &mut z[..2 * w]);
        f(start, &z[..n]);
        start += n;
    }
}

/// Fill `out` with independent standard normal draws (bulk Box–Muller, the
/// stream of [`for_each_normal_block`]).
pub fn fill_standard_normal<R: rand::Rng + ?Sized>(rng: &mut R, out: &mut [f64]) {
    for_each_normal_block(rng, out.len(), |start, z| {
        out[start..start + z.len()].copy_from_slice(z)
    });
}

/// One standard normal draw.
#[inline]
pub fn standard_normal<R: rand::Rng + ?Sized>(rng: &mut R) -> f64 {
    StandardNormal.sample(rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_distinct_and_reproducible() {
        let a: u64 = chain_rng(1, 0).random();
        let b: u64 = chain_rng(1, 1).random();
        let c: u64 = chain_rng(1, 0).random();
        assert_ne!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn rng_state_roundtrips_through_serde() {
        let mut r = chain_rng(7, 3);
        let _: u64 = r.random();
        let s = serde_json::to_string(&r).unwrap();
        let mut r2: ChainRng = serde_json::from_str(&s).unwrap();
        assert_eq!(r.random::<u64>(), r2.random::<u64>());
    }

    /// Blocked normals are the same numbers as one bulk Box–Muller draw,
    /// for lengths below, at and across the block size, odd and even; and
    /// the generator ends at the same position.
    #[test]
    fn blocked_normals_equal_one_bulk_draw() {
        for d in [
            0,
            1,
            2,
            7,
            NORMAL_BLOCK - 1,
            NORMAL_BLOCK,
            NORMAL_BLOCK + 1,
            3 * NORMAL_BLOCK + 5,
        ] {
            let mut r1 = chain_rng(11, 2);
            let mut r2 = r1.clone();
            let w = d.div_ceil(2);
            let mut words = vec![0u64; w];
            r1.fill(&mut words[..]);
            let mut bulk = vec![0.0; 2 * w];
            crate::vecmath::box_muller(&words, &mut bulk);
            let mut z = vec![f64::NAN; d];
            fill_standard_normal(&mut r2, &mut z);
            assert_eq!(z[..], bulk[..d], "d = {d}");
            assert_eq!(r1.random::<u64>(), r2.random::<u64>(), "d = {d}");
            let mut seen = vec![false; d];
            for_each_normal_block(&mut chain_rng(11, 2), d, |start, blk| {
                for (i, x) in blk.iter().enumerate() {
                    assert_eq!(*x, bulk[start + i]);
                    assert!(!seen[start + i]);
                    seen[start + i] = true;
                }
            });
            assert!(seen.iter().all(|&s| s), "d = {d}");
        }
    }
}
