//! Token usage of an upstream answer, added up into the batch's `usage`.

use serde_json::Value;

use crate::domain::batch::{InputTokensDetails, OutputTokensDetails, Usage};

/// The `usage` of a 2xx answer body, mapped onto the batch's [`Usage`]:
///
/// - Responses API: `input_tokens`, `output_tokens`, `total_tokens`,
///   `input_tokens_details.cached_tokens`, `output_tokens_details.reasoning_tokens`;
/// - chat and legacy completions: `prompt_tokens`, `completion_tokens`,
///   `total_tokens`, `prompt_tokens_details.cached_tokens`,
///   `completion_tokens_details.reasoning_tokens`;
/// - embeddings: `prompt_tokens`, `total_tokens`.
///
/// A missing or `null` count is 0 (OpenAI-compatible servers often leave the
/// details out); a missing total is input plus output. `None` when the body has
/// no usage, or one with no count we know (moderations have none).
pub fn usage_of(body: &Value) -> Option<Usage> {
    let usage = body.get("usage")?.as_object()?;
    let count = |key: &str| usage.get(key).and_then(Value::as_u64);
    let detail = |outer: &str, inner: &str| {
        usage
            .get(outer)
            .and_then(|details| details.get(inner))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let responses_api = usage.contains_key("input_tokens") || usage.contains_key("output_tokens");
    let (input, output, cached, reasoning) = if responses_api {
        (
            count("input_tokens"),
            count("output_tokens"),
            detail("input_tokens_details", "cached_tokens"),
            detail("output_tokens_details", "reasoning_tokens"),
        )
    } else {
        (
            count("prompt_tokens"),
            count("completion_tokens"),
            detail("prompt_tokens_details", "cached_tokens"),
            detail("completion_tokens_details", "reasoning_tokens"),
        )
    };
    let total = count("total_tokens");
    if input.is_none() && output.is_none() && total.is_none() {
        return None;
    }
    let (input, output) = (input.unwrap_or(0), output.unwrap_or(0));
    Some(Usage {
        input_tokens: input,
        input_tokens_details: InputTokensDetails {
            cached_tokens: cached,
        },
        output_tokens: output,
        output_tokens_details: OutputTokensDetails {
            reasoning_tokens: reasoning,
        },
        total_tokens: total.unwrap_or(input.saturating_add(output)),
    })
}

impl Usage {
    /// Adds `other` into `self`, field by field; saturates rather than wraps.
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.input_tokens_details.cached_tokens = self
            .input_tokens_details
            .cached_tokens
            .saturating_add(other.input_tokens_details.cached_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.output_tokens_details.reasoning_tokens = self
            .output_tokens_details
            .reasoning_tokens
            .saturating_add(other.output_tokens_details.reasoning_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
    }
}
