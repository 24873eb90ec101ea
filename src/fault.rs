//! Crash points for fault-injection tests.
//!
//! Built with the `fault-injection` feature, `crash_point("name")` kills the
//! process on the spot when `LB_CRASH_AT=name`, as a power cut or an OOM kill
//! would. Without the feature (every release build) it compiles to nothing.

#[cfg(feature = "fault-injection")]
pub fn crash_point(name: &str) {
    if std::env::var("LB_CRASH_AT").is_ok_and(|at| at == name) {
        eprintln!("fault injection: crashing at {name}");
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn crash_point(_name: &str) {}
