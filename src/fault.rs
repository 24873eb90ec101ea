//! Crash points for fault-injection tests.
//!
//! Built with the `fault-injection` feature, `crash_point("name")` kills the
//! process on the spot, as a power cut or an OOM kill would, when
//! `LB_CRASH_AT=name`: the first time the point is reached, or the n-th time
//! with `LB_CRASH_AFTER=n` (the second segment commit rather than the first).
//! Without the feature (every release build) it compiles to nothing.
//!
//! `tests/crash_points.rs` runs the server binary once per point and checks
//! that a restart still ends the batch with each `custom_id` exactly once;
//! a new point needs a scenario there (a test fails on a point without one).

#[cfg(feature = "fault-injection")]
pub fn crash_point(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};

    // One point is armed per process, so one counter serves it.
    static REACHED: AtomicU64 = AtomicU64::new(0);

    if !std::env::var("LB_CRASH_AT").is_ok_and(|at| at == name) {
        return;
    }
    let after = std::env::var("LB_CRASH_AFTER")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(1);
    let reached = REACHED.fetch_add(1, Ordering::SeqCst) + 1;
    if reached >= after {
        eprintln!("fault injection: crashing at {name} (visit {reached})");
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn crash_point(_name: &str) {}
