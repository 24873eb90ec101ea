//! When and how long to wait before trying a request line again.

use std::time::Duration;

use backon::ExponentialBuilder;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;

/// How [`UpstreamClient::execute`](super::UpstreamClient::execute) retries one line.
///
/// Waits grow exponentially from `initial_backoff` up to `max_backoff`, with
/// jitter so that the lines of a shard that failed together do not come back
/// together; an upstream's `retry-after` replaces the computed wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; `0` is taken as `1`.
    pub max_attempts: u32,
    /// The wait before the first retry (before jitter).
    pub initial_backoff: Duration,
    /// No computed wait is longer than this.
    pub max_backoff: Duration,
    /// A `retry-after` longer than this is cut down to it.
    pub max_retry_after: Duration,
    /// One attempt, from connecting to the last byte of the answer. LLM calls
    /// are slow: a long completion can take minutes.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The schedule of waits between attempts; `None` from it means no attempt is left.
    ///
    /// backon's jitter adds a uniform `[0, d)` to the exponential delay `d`, so
    /// waits fall in `[d, 2d)`. Halving both bounds makes them fall in
    /// `[d/2, d)` with `d = min(initial_backoff · 2ⁿ, max_backoff)`: "equal
    /// jitter", spread out yet never above `max_backoff`. backon has no full
    /// jitter (`[0, d)`).
    pub(crate) fn backoff(&self) -> ExponentialBuilder {
        let retries = self.max_attempts.saturating_sub(1);
        ExponentialBuilder::new()
            .with_factor(2.0)
            .with_min_delay(self.initial_backoff / 2)
            .with_max_delay(self.max_backoff / 2)
            .with_jitter()
            .with_max_times(usize::try_from(retries).unwrap_or(usize::MAX))
    }

    /// The wait before the next attempt: the upstream's `retry-after` when it
    /// gave one (capped), else the computed `backoff`.
    pub(crate) fn wait(&self, retry_after: Option<Duration>, backoff: Duration) -> Duration {
        match retry_after {
            Some(asked) => asked.min(self.max_retry_after),
            None => backoff,
        }
    }
}

/// 408 and 429 are the only 4xx worth another try: the request itself was
/// fine, the upstream was busy. Every 5xx may pass on a retry.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// The wait an answer asks for: `retry-after-ms` (milliseconds, which the
/// OpenAI SDKs prefer) or else `retry-after` (seconds). An HTTP-date
/// `retry-after`, a zero or a nonsense value asks for nothing, and the
/// computed backoff applies, as in the OpenAI SDKs.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let positive = |name: &str| {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|value| value.is_finite() && *value > 0.0)
    };
    if let Some(millis) = positive("retry-after-ms") {
        return Duration::try_from_secs_f64(millis / 1000.0).ok();
    }
    positive("retry-after").and_then(|secs| Duration::try_from_secs_f64(secs).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BackoffBuilder;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_schedule_has_one_wait_per_retry_each_within_half_to_the_full_exponential_delay() {
        let policy = RetryPolicy::default();

        let waits: Vec<Duration> = policy.backoff().build().collect();

        assert_eq!(waits.len(), 5, "6 attempts, 5 waits");
        for (n, wait) in waits.iter().enumerate() {
            let full = (policy.initial_backoff * 2u32.pow(n as u32)).min(policy.max_backoff);
            assert!(*wait >= full / 2 && *wait < full, "wait {n}: {wait:?}");
        }
    }

    #[test]
    fn waits_never_exceed_the_maximum_backoff() {
        let policy = RetryPolicy {
            max_attempts: 30,
            ..RetryPolicy::default()
        };

        assert!(policy
            .backoff()
            .build()
            .all(|wait| wait <= policy.max_backoff));
    }

    #[test]
    fn zero_or_one_attempt_means_no_retry() {
        for max_attempts in [0, 1] {
            let policy = RetryPolicy {
                max_attempts,
                ..RetryPolicy::default()
            };
            assert_eq!(policy.backoff().build().next(), None);
        }
    }

    #[test]
    fn retry_after_ms_wins_over_retry_after_and_both_are_read() {
        assert_eq!(
            retry_after(&headers(&[
                ("retry-after", "2"),
                ("retry-after-ms", "1500")
            ])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "1.5")])),
            Some(Duration::from_millis(1500))
        );
        for nothing in ["0", "-3", "soon", "Wed, 21 Oct 2015 07:28:00 GMT", "inf"] {
            assert_eq!(retry_after(&headers(&[("retry-after", nothing)])), None);
        }
        assert_eq!(retry_after(&headers(&[("retry-after", "1e300")])), None);
    }

    #[test]
    fn a_retry_after_is_obeyed_up_to_its_cap() {
        let policy = RetryPolicy::default();
        let backoff = Duration::from_millis(300);

        assert_eq!(
            policy.wait(Some(Duration::from_secs(3)), backoff),
            Duration::from_secs(3)
        );
        assert_eq!(
            policy.wait(Some(Duration::from_secs(3600)), backoff),
            policy.max_retry_after
        );
        assert_eq!(policy.wait(None, backoff), backoff);
    }

    #[test]
    fn only_408_429_and_5xx_are_retried() {
        for status in [408, 429, 500, 502, 503, 504, 599] {
            assert!(is_retryable_status(StatusCode::from_u16(status).unwrap()));
        }
        for status in [400, 401, 403, 404, 409, 413, 422, 301] {
            assert!(!is_retryable_status(StatusCode::from_u16(status).unwrap()));
        }
    }
}
