//! How fresh the AW database's rows are: for each agent whose state changed since the previous
//! commit, the wall time of the commit minus the time the change was ordered (the PG's event,
//! as the enabled side stamped it). Kept per second for the last `FRESHNESS_WINDOW_S` seconds,
//! so a reading is of recent load and not of the whole run.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The seconds a reading covers.
pub const FRESHNESS_WINDOW_S: u64 = 60;
/// The largest freshness recorded; a larger one is recorded as this.
const FRESHNESS_MS_MAX: u64 = 3_600_000;

/// Percentiles of the freshness samples of the window, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreshnessSummary {
    pub samples: u64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

#[derive(Default)]
pub struct FreshnessWindow {
    /// (second since the Unix epoch, its samples), oldest first.
    seconds: VecDeque<(u64, Histogram<u64>)>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_max(FRESHNESS_MS_MAX, 2).expect("valid histogram bounds")
}

impl FreshnessWindow {
    /// Records a sample taken at `now_ms`; a negative one (a clock step) counts as zero.
    pub fn record(&mut self, now_ms: u64, freshness_ms: i64) {
        let second = now_ms / 1000;
        if self.seconds.back().is_none_or(|(s, _)| *s < second) {
            self.seconds.push_back((second, histogram()));
        }
        while self
            .seconds
            .front()
            .is_some_and(|(s, _)| s + FRESHNESS_WINDOW_S <= second)
        {
            self.seconds.pop_front();
        }
        let value = (freshness_ms.max(0) as u64).min(FRESHNESS_MS_MAX);
        if let Some((_, h)) = self.seconds.back_mut() {
            h.saturating_record(value);
        }
    }

    /// The samples of the last `FRESHNESS_WINDOW_S` seconds before `now_ms`; None without any.
    pub fn summary(&self, now_ms: u64) -> Option<FreshnessSummary> {
        let second = now_ms / 1000;
        let mut merged = histogram();
        for (s, h) in &self.seconds {
            if s + FRESHNESS_WINDOW_S > second {
                merged.add(h).ok()?;
            }
        }
        (!merged.is_empty()).then(|| FreshnessSummary {
            samples: merged.len(),
            p50_ms: merged.value_at_quantile(0.50),
            p99_ms: merged.value_at_quantile(0.99),
            max_ms: merged.max(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_covers_the_last_window_only() {
        let mut window = FreshnessWindow::default();
        window.record(1_000, 500);
        for i in 0..100 {
            window.record(70_000 + i, 10 + (i as i64 % 10));
        }
        window.record(70_500, -3);
        let s = window.summary(70_900).unwrap();
        assert_eq!(
            s.samples, 101,
            "the sample of second 1 fell out of the window"
        );
        assert!(s.max_ms < 500);
        assert_eq!(s.p50_ms, 14);
        assert!(window.summary(200_000).is_none());
    }
}
