//! What a verdict needs: the minimum run (duration, setup, samples) under which a criterion's
//! PASS or FAIL is only a measurement, and percentiles that say how many samples they come from.
//!
//! A criterion whose minimums were not met is reported as measured but not judged, and a report
//! with such a criterion has no overall verdict (INCONCLUSIVE), never PASS.

use serde::Serialize;

/// A timed phase (the archiver's run, the raw baseline's, a concurrency run): long enough that
/// start-up (processes, connections, planning, well under a second) weighs under about 5 %.
pub const MIN_TIMED_S: f64 = 10.0;
/// A phase whose latency percentiles or CPU are compared (db-impact's before and during).
pub const MIN_PHASE_S: f64 = 10.0;
/// The guide's sustained test: 24 hours. Memory growth, crashes and hangs are judged over no less.
pub const MIN_SUSTAINED_S: f64 = 24.0 * 3600.0;
/// The guide's sustained setup: 1M+ records.
pub const MIN_SUSTAINED_ROWS: u64 = 1_000_000;
/// Memory samples a sustained run needs (the sampler takes about 300).
pub const MIN_SUSTAINED_SAMPLES: u64 = 100;
/// The guide's memory criterion is set at batch 50,000.
pub const GUIDE_BATCH: u32 = 50_000;
/// The guide's large-batch setup: 200K+ records.
pub const MIN_LARGE_BATCH_ROWS: u64 = 200_000;
/// The guide's concurrency setup: 5 to 10 tables of 100K records each.
pub const MIN_CONCURRENCY_TABLES: u64 = 5;
pub const MIN_CONCURRENCY_ROWS: u64 = 100_000;
/// Pool stability: runs against one worker, and the guide's "large connection pool (10+)".
pub const MIN_POOL_RUNS: u64 = 10;
pub const MIN_POOL_SIZE: u64 = 10;
/// The least number of samples any percentile is judged from.
pub const MIN_PERCENTILE_SAMPLES: u64 = 20;

/// One condition a criterion's verdict needs: what, how much, and what this run had.
#[derive(Debug, Clone, Serialize)]
pub struct Requirement {
    pub what: String,
    pub needed: String,
    pub actual: String,
    pub met: bool,
}

impl Requirement {
    /// At least `needed_s` seconds of `what`.
    pub fn secs(what: &str, actual_s: f64, needed_s: f64) -> Requirement {
        Requirement { what: what.into(), needed: format!("≥ {}", human_secs(needed_s)), actual: human_secs(actual_s), met: actual_s >= needed_s }
    }

    /// At least `needed` of `what` (rows, runs, samples…).
    pub fn count(what: &str, actual: u64, needed: u64) -> Requirement {
        let n = |x: u64| crate::report::thousands(x as f64);
        Requirement { what: what.into(), needed: format!("≥ {}", n(needed)), actual: n(actual), met: actual >= needed }
    }

    /// The percentile was computed from enough samples over a long enough window.
    pub fn percentile(p: &Percentile) -> Requirement {
        Requirement {
            what: p.name.clone(),
            needed: format!("≥ {} samples over ≥ {}", min_samples(p.q), human_secs(MIN_PHASE_S)),
            actual: format!("{} samples over {}", p.samples, human_secs(p.window_s)),
            met: !p.small_sample,
        }
    }
}

/// `2.8 s`, `4.5 min`, `24 h`.
pub fn human_secs(s: f64) -> String {
    if s >= 3600.0 {
        format!("{} h", trim(s / 3600.0))
    } else if s >= 60.0 {
        format!("{} min", trim(s / 60.0))
    } else {
        format!("{s:.1} s")
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// Samples a `q`-quantile needs: at least one sample above it (100 for a p99, 20 for a p95), and
/// never fewer than [`MIN_PERCENTILE_SAMPLES`]. Below that a p99 is just the largest value seen.
pub fn min_samples(q: f64) -> u64 {
    ((1.0 / (1.0 - q).max(1e-6)).round() as u64).max(MIN_PERCENTILE_SAMPLES)
}

/// A percentile with what it was computed from; `small_sample` when too few samples or too short
/// a window stand behind it (then `warning` says so, and the report prints it).
#[derive(Debug, Clone, Serialize)]
pub struct Percentile {
    /// e.g. `insert p99 before`.
    pub name: String,
    pub q: f64,
    pub value: f64,
    pub samples: u64,
    pub window_s: f64,
    pub small_sample: bool,
    pub warning: Option<String>,
}

impl Percentile {
    /// The nearest-rank `q`-quantile of `values`, collected over `window_s` seconds.
    pub fn of(name: &str, values: &[f64], q: f64, window_s: f64) -> Percentile {
        let samples = values.len() as u64;
        let needed = min_samples(q);
        let mut why = Vec::new();
        if samples < needed {
            why.push(format!("{samples} samples (fewer than {needed})"));
        }
        if window_s < MIN_PHASE_S {
            why.push(format!("a {} window (shorter than {})", human_secs(window_s), human_secs(MIN_PHASE_S)));
        }
        let warning = (!why.is_empty()).then(|| format!("{name} is from {}: an unreliable estimate", why.join(" and ")));
        Percentile { name: name.into(), q, value: crate::sample::quantile(values, q), samples, window_s, small_sample: !why.is_empty(), warning }
    }

    /// The value in ms, with a warning after it when it stands on too little.
    pub fn ms(&self) -> String {
        if self.small_sample {
            format!("{:.2} (WARNING: small sample)", self.value)
        } else {
            format!("{:.2}", self.value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_p99_from_20_samples_carries_a_warning() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let p = Percentile::of("insert p99 before", &v, 0.99, 60.0);
        assert!(p.small_sample);
        assert_eq!(p.value, 20.0);
        assert!(p.warning.as_deref().unwrap().contains("20 samples (fewer than 100)"), "{p:?}");
        assert!(p.ms().contains("WARNING: small sample"), "{}", p.ms());
        assert!(!Requirement::percentile(&p).met);
    }

    #[test]
    fn a_p99_over_a_short_phase_carries_a_warning_even_with_many_samples() {
        let v: Vec<f64> = (1..=250).map(f64::from).collect();
        let p = Percentile::of("read p99 during", &v, 0.99, 5.0);
        assert!(p.small_sample && p.warning.as_deref().unwrap().contains("a 5.0 s window"), "{p:?}");
        let ok = Percentile::of("read p99 during", &v, 0.99, 20.0);
        assert!(!ok.small_sample && ok.warning.is_none() && !ok.ms().contains("WARNING"), "{ok:?}");
    }

    #[test]
    fn samples_a_percentile_needs() {
        assert_eq!(min_samples(0.99), 100);
        assert_eq!(min_samples(0.95), 20);
        assert_eq!(min_samples(0.5), MIN_PERCENTILE_SAMPLES);
        assert_eq!(min_samples(0.999), 1000);
    }

    #[test]
    fn requirements_say_what_was_needed_and_had() {
        let r = Requirement::secs("archiver run", 2.8, MIN_TIMED_S);
        assert!(!r.met);
        assert_eq!((r.needed.as_str(), r.actual.as_str()), ("≥ 10.0 s", "2.8 s"));
        assert_eq!(Requirement::secs("run", 300.0, MIN_SUSTAINED_S).needed, "≥ 24 h");
        assert_eq!(human_secs(300.0), "5 min");
        assert!(Requirement::count("runs", 10, MIN_POOL_RUNS).met);
    }
}
