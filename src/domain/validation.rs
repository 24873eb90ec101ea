//! The one error type of input validation, shaped like OpenAI's error object.

use std::fmt;

/// A client mistake: rendered as 400 with `message`, `param` and `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub message: String,
    pub param: Option<String>,
    pub code: &'static str,
}

impl ValidationError {
    pub fn new(code: &'static str, param: impl Into<Option<String>>, message: String) -> Self {
        Self {
            message,
            param: param.into(),
            code,
        }
    }

    pub fn missing(param: &str) -> Self {
        Self::new(
            "missing_required_parameter",
            param.to_string(),
            format!("Missing required parameter: '{param}'."),
        )
    }

    pub fn invalid_type(param: &str, expected: &str, got: JsonKind) -> Self {
        Self::new(
            "invalid_type",
            param.to_string(),
            format!("Invalid type for '{param}': expected {expected}, but got {got} instead."),
        )
    }

    pub fn invalid_value(param: &str, message: String) -> Self {
        Self::new("invalid_value", param.to_string(), message)
    }
}

/// The JSON type of a value, for messages like "expected a string, but got an array".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

impl JsonKind {
    pub fn of(value: &serde_json::Value) -> Self {
        use serde_json::Value;
        match value {
            Value::Null => Self::Null,
            Value::Bool(_) => Self::Boolean,
            Value::Number(_) => Self::Number,
            Value::String(_) => Self::String,
            Value::Array(_) => Self::Array,
            Value::Object(_) => Self::Object,
        }
    }
}

impl fmt::Display for JsonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Null => "null",
            Self::Boolean => "a boolean",
            Self::Number => "a number",
            Self::String => "a string",
            Self::Array => "an array",
            Self::Object => "an object",
        })
    }
}
