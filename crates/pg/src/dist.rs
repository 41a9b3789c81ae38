//! The random draws the simulator makes, all from one seeded ChaCha8 stream so that a run is a
//! function of its seed and of the outputs fed back.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The simulator's only source of randomness.
pub(crate) struct Dice {
    rng: ChaCha8Rng,
}

impl Dice {
    pub(crate) fn new(seed: u64) -> Dice {
        Dice {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A uniform draw from `[0, 1)`.
    fn unit(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    /// An exponential draw with the given mean, by inverse transform: `-mean * ln(1 - u)`.
    /// `1 - u` lies in `(0, 1]`, so the logarithm is finite and the draw is never negative.
    pub(crate) fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// An exponential duration in whole milliseconds (rounded to nearest).
    pub(crate) fn exponential_ms(&mut self, mean_ms: u64) -> u64 {
        // The largest draw is about 37 means (u = 1 - 2^-53), far below u64 for any mean the
        // load check admits.
        self.exponential(mean_ms as f64).round() as u64
    }

    /// True with probability `p` (`p` outside `0..=1` acts as clamped).
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A uniform index in `0..n`; `n` must be positive.
    pub(crate) fn index(&mut self, n: usize) -> usize {
        assert!(n > 0, "index draw from an empty range");
        self.rng.random_range(0..n)
    }

    /// A uniform draw from `0..=max`.
    pub(crate) fn up_to(&mut self, max: u64) -> u64 {
        self.rng.random_range(0..=max)
    }

    /// A uniform draw from `0..=1` as a fraction, for splitting a duration.
    pub(crate) fn fraction(&mut self) -> f64 {
        self.unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_draws_have_the_requested_mean() {
        let mut dice = Dice::new(7);
        let n = 200_000;
        let sum: f64 = (0..n).map(|_| dice.exponential(1_000.0)).sum();
        let mean = sum / n as f64;
        // The standard error of the mean is 1000 / sqrt(200000), about 2.2.
        assert!((mean - 1_000.0).abs() < 15.0, "mean {mean}");
    }

    #[test]
    fn exponential_draws_are_never_negative_and_zero_mean_gives_zero() {
        let mut dice = Dice::new(8);
        for _ in 0..10_000 {
            assert!(dice.exponential(5.0) >= 0.0);
            assert_eq!(dice.exponential_ms(0), 0);
        }
    }

    #[test]
    fn chance_matches_its_probability_and_its_bounds() {
        let mut dice = Dice::new(9);
        let n = 100_000;
        let hits = (0..n).filter(|_| dice.chance(0.3)).count();
        let share = hits as f64 / n as f64;
        assert!((share - 0.3).abs() < 0.01, "share {share}");
        assert!((0..1000).all(|_| !dice.chance(0.0)));
        assert!((0..1000).all(|_| dice.chance(1.0)));
    }

    #[test]
    fn same_seed_same_draws() {
        let mut a = Dice::new(3);
        let mut b = Dice::new(3);
        for _ in 0..100 {
            assert_eq!(a.exponential_ms(1000), b.exponential_ms(1000));
        }
    }
}
