//! The governor's decision: a pure state machine from signals to a rate.
//!
//! Input, once per interval: the health of everyone else (the latency of the governor's probe over
//! its idle baseline, sessions kept waiting on locks the archiver holds) and of the replicas (lag,
//! replay paused). Output: a [`Decision`]: the factor (0.05 to 1) the database-time budget is
//! multiplied by, a state and its reason. Rules:
//! - a replica lagging past `max_replica_lag`, or with replay paused, is a hard gate: `Paused`,
//!   writes are held; the factor is kept for when they resume;
//! - sessions waiting on our locks halve the factor at once;
//! - a probe slower than `max_probe_ratio` x baseline lowers it in proportion to the overshoot
//!   (never by more than half, never less than a tenth);
//! - healthy for two intervals in a row, it climbs back: half-way to the last factor that was
//!   healthy (bisection), at least 0.05 a step, up to 1.
//!
//! So it backs off fast, recovers step by step, and two bad readings in a row are needed before it
//! halves twice: it does not swing between extremes.

use std::time::Duration;

/// The lowest factor: the archiver never stops on a soft signal, it only slows to 5 % of budget.
pub const MIN_FACTOR: f64 = 0.05;
/// Where a controller starts: half its budget, climbing while healthy.
pub const START_FACTOR: f64 = 0.5;

/// What the governor saw in one interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    /// Probe latency over its idle baseline (None: no reading this time).
    pub probe_ratio: Option<f64>,
    /// Sessions of others waiting on locks an archiver session holds.
    pub lock_waiters: u32,
    /// The worst replication lag seen (primary's view and each watched replica).
    pub replica_lag: Option<Duration>,
    /// A watched replica has replay paused, or cannot be reached.
    pub replica_stalled: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// At the full factor, or climbing back to it.
    Running,
    /// Slowed down by a soft signal.
    Throttled,
    /// Writes held by a hard gate.
    Paused,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Throttled => "throttled",
            State::Paused => "paused",
        }
    }
}

/// Why the governor is where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Healthy,
    ProbeLatency,
    LockWaits,
    ReplicaLag,
    ReplicaStalled,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Healthy => "healthy",
            Reason::ProbeLatency => "probe_latency",
            Reason::LockWaits => "lock_waits",
            Reason::ReplicaLag => "replica_lag",
            Reason::ReplicaStalled => "replica_stalled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub factor: f64,
    pub state: State,
    pub reason: Reason,
}

/// The controller of one source database in one process.
#[derive(Debug, Clone)]
pub struct Controller {
    max_probe_ratio: f64,
    max_replica_lag: Duration,
    factor: f64,
    /// The last factor at which everything was healthy: where recovery heads.
    last_good: f64,
    healthy_in_a_row: u32,
}

impl Controller {
    pub fn new(max_probe_ratio: f64, max_replica_lag: Duration) -> Self {
        Controller { max_probe_ratio, max_replica_lag, factor: START_FACTOR, last_good: 1.0, healthy_in_a_row: 0 }
    }

    /// The decision for this interval's signals.
    pub fn step(&mut self, s: &Signals) -> Decision {
        if s.replica_stalled.is_some() {
            return self.hold(Reason::ReplicaStalled);
        }
        if s.replica_lag.is_some_and(|l| l > self.max_replica_lag) {
            return self.hold(Reason::ReplicaLag);
        }
        if s.lock_waiters > 0 {
            return self.back_off(0.5, Reason::LockWaits);
        }
        if let Some(r) = s.probe_ratio.filter(|r| *r > self.max_probe_ratio) {
            return self.back_off((self.max_probe_ratio / r).clamp(0.5, 0.9), Reason::ProbeLatency);
        }
        self.healthy_in_a_row += 1;
        if self.healthy_in_a_row >= 2 && self.factor < 1.0 {
            let step = ((self.last_good - self.factor) / 2.0).max(0.05);
            self.factor = (self.factor + step).min(1.0);
            if self.factor >= self.last_good {
                self.last_good = 1.0;
            }
        }
        Decision { factor: self.factor, state: State::Running, reason: Reason::Healthy }
    }

    fn hold(&mut self, reason: Reason) -> Decision {
        self.healthy_in_a_row = 0;
        Decision { factor: self.factor, state: State::Paused, reason }
    }

    fn back_off(&mut self, by: f64, reason: Reason) -> Decision {
        if self.healthy_in_a_row > 0 {
            // It was healthy at the factor just before this reading.
            self.last_good = self.factor;
        }
        self.healthy_in_a_row = 0;
        self.factor = (self.factor * by).max(MIN_FACTOR);
        Decision { factor: self.factor, state: State::Throttled, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c() -> Controller {
        Controller::new(2.0, Duration::from_secs(30))
    }
    fn healthy() -> Signals {
        Signals { probe_ratio: Some(1.1), ..Default::default() }
    }

    #[test]
    fn ramps_up_while_healthy_to_the_full_budget() {
        let mut c = c();
        let mut last = 0.0;
        for _ in 0..40 {
            let d = c.step(&healthy());
            assert_eq!(d.state, State::Running);
            assert!(d.factor >= last, "never goes down while healthy");
            last = d.factor;
        }
        assert_eq!(last, 1.0);
    }

    #[test]
    fn backs_off_fast_on_lock_waits_and_in_proportion_on_latency() {
        let mut c = c();
        for _ in 0..40 {
            c.step(&healthy());
        }
        let d = c.step(&Signals { lock_waiters: 1, ..healthy() });
        assert_eq!((d.factor, d.state, d.reason), (0.5, State::Throttled, Reason::LockWaits));
        let d = c.step(&Signals { probe_ratio: Some(2.4), ..Default::default() });
        assert!((d.factor - 0.5 * (2.0 / 2.4)).abs() < 1e-9, "{d:?}");
        assert_eq!(d.reason, Reason::ProbeLatency);
        let d = c.step(&Signals { probe_ratio: Some(50.0), ..Default::default() });
        assert!((d.factor - 0.5 * (2.0 / 2.4) * 0.5).abs() < 1e-9, "never more than halved: {d:?}");
        for _ in 0..100 {
            c.step(&Signals { lock_waiters: 3, ..Default::default() });
        }
        assert_eq!(c.step(&Signals { lock_waiters: 3, ..Default::default() }).factor, MIN_FACTOR);
    }

    #[test]
    fn recovers_by_bisection_towards_the_last_good_factor() {
        let mut c = c();
        for _ in 0..40 {
            c.step(&healthy());
        }
        c.step(&Signals { lock_waiters: 1, ..healthy() }); // 1.0 -> 0.5, last good 1.0
        c.step(&healthy());
        let d = c.step(&healthy());
        assert_eq!(d.factor, 0.75, "half-way back after two healthy readings");
        assert_eq!(c.step(&healthy()).factor, 0.875);
    }

    #[test]
    fn a_replica_gate_holds_writes_and_keeps_the_factor() {
        let mut c = c();
        for _ in 0..40 {
            c.step(&healthy());
        }
        let lagging = Signals { replica_lag: Some(Duration::from_secs(31)), ..healthy() };
        let d = c.step(&lagging);
        assert_eq!((d.state, d.reason, d.factor), (State::Paused, Reason::ReplicaLag, 1.0));
        let stalled = Signals { replica_stalled: Some("replay paused".into()), ..healthy() };
        assert_eq!(c.step(&stalled).reason, Reason::ReplicaStalled);
        let d = c.step(&Signals { replica_lag: Some(Duration::from_secs(29)), ..healthy() });
        assert_eq!((d.state, d.factor), (State::Running, 1.0));
    }

    #[test]
    fn an_alternating_signal_does_not_swing_between_extremes() {
        let mut c = c();
        let mut seen = Vec::new();
        for i in 0..200 {
            let s = if i % 2 == 0 { healthy() } else { Signals { probe_ratio: Some(2.2), ..Default::default() } };
            seen.push(c.step(&s).factor);
        }
        let tail = &seen[100..];
        let (lo, hi) = tail.iter().fold((f64::MAX, f64::MIN), |(a, b), f| (a.min(*f), b.max(*f)));
        assert!(hi - lo < 0.2, "settles in a narrow band: {lo}..{hi}");
        assert!(lo >= MIN_FACTOR);
    }
}
