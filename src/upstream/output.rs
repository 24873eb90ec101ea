//! A line of the batch's output or error file, in OpenAI's shape:
//!
//! - success, to the output file:
//!   `{"id","custom_id","response":{"status_code","request_id","body"},"error":null}`;
//! - an upstream non-2xx, to the error file: the same, with the upstream's
//!   status and error body;
//! - a transport failure, to the error file:
//!   `{"id","custom_id","response":null,"error":{"code","message"}}`.

use serde::Serialize;
use serde_json::Value;

use super::execute::Outcome;

/// A line borrowing from its [`Outcome`]: serialize it straight into the file
/// (`serde_json::to_writer`) to copy no body, and keep OpenAI's field order.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OutputLine<'a> {
    /// The `batch_req_…` id of the line.
    pub id: &'a str,
    pub custom_id: &'a str,
    pub response: Option<OutputResponse<'a>>,
    pub error: Option<OutputError<'a>>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct OutputResponse<'a> {
    pub status_code: u16,
    pub request_id: &'a str,
    pub body: &'a Value,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct OutputError<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

impl<'a> OutputLine<'a> {
    pub fn new(id: &'a str, custom_id: &'a str, outcome: &'a Outcome) -> Self {
        let (response, error) = match outcome {
            Outcome::Response {
                status_code,
                request_id,
                body,
            } => (
                Some(OutputResponse {
                    status_code: *status_code,
                    request_id,
                    body,
                }),
                None,
            ),
            Outcome::TransportError { code, message } => {
                (None, Some(OutputError { code, message }))
            }
        };
        Self {
            id,
            custom_id,
            response,
            error,
        }
    }

    /// Whether the line belongs in the output file rather than the error file.
    pub fn is_success(&self) -> bool {
        self.response
            .is_some_and(|response| (200..300).contains(&response.status_code))
    }
}

/// The line for `outcome` as a JSON value, and whether it is a success (output
/// file) or not (error file). [`OutputLine`] writes the same without copying.
pub fn output_line(id: &str, custom_id: &str, outcome: &Outcome) -> (bool, Value) {
    let line = OutputLine::new(id, custom_id, outcome);
    let value = serde_json::to_value(line).expect("an output line always serializes");
    (line.is_success(), value)
}
