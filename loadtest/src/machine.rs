//! What the machine under a benchmark is like, where it changes what a result means.
//!
//! Two virtual CPUs may be two hyperthreads of one physical core (or run by the host on one):
//! then any work on either slows whatever runs on the other, and the probes of `db-impact` feel
//! the archiver however little of the machine it takes. The same VM size has shown both: a ratio
//! of 1.7 one day and 1.0 another. So `db-impact` measures it and says so in its report.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A fixed piece of CPU work (a few tens of milliseconds); its duration.
fn work() -> Duration {
    let started = Instant::now();
    let mut x = 0u64;
    for i in 0..20_000_000u64 {
        x = black_box(x.wrapping_add(i.wrapping_mul(i)));
    }
    black_box(x);
    started.elapsed()
}

/// Pins the calling thread to `cpu`; false where that is not possible.
#[cfg(target_os = "linux")]
fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it; the call reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn pin(_cpu: usize) -> bool {
    false
}

/// How much slower the work runs on CPU 0 while CPU 1 spins than while it idles (best of five
/// each): about 1.0 when the two do not share a core. None with fewer than two CPUs or where
/// threads cannot be pinned. Takes about a second; run it before the benchmark, not during.
pub fn core_sharing() -> Option<f64> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return None;
    }
    let best = |n| (0..n).map(|_| work()).min().expect("n > 0");
    let alone = std::thread::spawn(move || pin(0).then(|| best(5))).join().ok()??;
    let stop = AtomicBool::new(false);
    let shared = std::thread::scope(|s| {
        let spinner = s.spawn(|| {
            if pin(1) {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            }
        });
        let timed = s.spawn(|| pin(0).then(|| best(5))).join().ok().flatten();
        stop.store(true, Ordering::Relaxed);
        let _ = spinner.join();
        timed
    })?;
    Some(shared.as_secs_f64() / alone.as_secs_f64().max(1e-9))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ratio_is_a_plausible_slowdown() {
        // Whatever the machine, a busy neighbour cannot make the work faster by much, nor
        // (short of an overloaded host) more than a few times slower.
        if let Some(r) = super::core_sharing() {
            assert!((0.8..5.0).contains(&r), "{r}");
        }
    }
}
