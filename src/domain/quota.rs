//! Per-tenant quotas: how many batches may be in flight (not yet in a terminal
//! status) and how many request lines they may hold between them.

/// The limits every tenant works under; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    pub max_batches_in_flight: Option<u32>,
    pub max_enqueued_lines: Option<u64>,
}

impl Quotas {
    pub const UNLIMITED: Self = Self {
        max_batches_in_flight: None,
        max_enqueued_lines: None,
    };

    /// Unlimited quotas cost nothing: no usage is kept at all.
    pub fn is_unlimited(&self) -> bool {
        self.max_batches_in_flight.is_none() && self.max_enqueued_lines.is_none()
    }

    /// Whether `lines` more request lines fit beside `enqueued` ones.
    pub fn lines_fit(&self, enqueued: u64, lines: u64) -> bool {
        self.max_enqueued_lines
            .is_none_or(|max| enqueued.saturating_add(lines) <= max)
    }
}

/// Which quota a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    #[error("You have {limit} batches in flight, the most allowed. Please try again once some of them have completed.")]
    BatchesInFlight { limit: u32 },
    #[error("Enqueued request line limit reached: your batches in flight hold the most allowed ({limit} lines). Please try again once some of them have completed.")]
    EnqueuedLines { limit: u64 },
}

impl QuotaExceeded {
    pub fn code(&self) -> &'static str {
        match self {
            Self::BatchesInFlight { .. } => "batch_quota_exceeded",
            Self::EnqueuedLines { .. } => "enqueued_line_limit_exceeded",
        }
    }
}

/// The batch error of a batch whose lines do not fit in the tenant's quota,
/// as OpenAI fails a batch over its enqueued token limit.
pub fn lines_over_limit_message(lines: u64, limit: u64) -> String {
    format!(
        "Enqueued request line limit reached: this batch has {lines} lines, and with your other batches in flight that exceeds the limit of {limit} lines. Please try again once some in-flight batches have completed."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_fit_up_to_the_limit_and_always_when_unlimited() {
        let quotas = Quotas {
            max_enqueued_lines: Some(10),
            ..Quotas::UNLIMITED
        };
        assert!(quotas.lines_fit(4, 6));
        assert!(!quotas.lines_fit(4, 7));
        assert!(!quotas.lines_fit(u64::MAX, 1));
        assert!(Quotas::UNLIMITED.lines_fit(u64::MAX, u64::MAX));
        assert!(Quotas::UNLIMITED.is_unlimited() && !quotas.is_unlimited());
    }
}
