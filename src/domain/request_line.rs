//! The one reading of a request line, shared by the upload check, the
//! validation stage and execution, so that a line validation accepts is a line
//! execution runs.
//!
//! A line is parsed once, into a `serde_json::Value`. A key that appears twice
//! keeps its last value: RFC 8259 leaves duplicate names to the implementation,
//! and last-wins is what serde_json's `Value` and Python's `json` (which OpenAI
//! and the llama-stack reference read lines with) both do. A derived struct
//! would instead refuse such a line ("duplicate field"): reading the same line
//! two ways is how a validated line once failed to run.

use serde_json::{Map, Value};

use super::batch::BatchError;

/// A request line whose four fields are all present and of the right type.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestLine {
    pub custom_id: String,
    pub method: String,
    pub url: String,
    /// The body sent upstream: always a JSON object.
    pub body: Map<String, Value>,
}

/// The four fields of a request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    CustomId,
    Method,
    Url,
    Body,
}

impl Field {
    /// The name in the line, and the `param` of an error about it.
    pub fn name(self) -> &'static str {
        match self {
            Self::CustomId => "custom_id",
            Self::Method => "method",
            Self::Url => "url",
            Self::Body => "body",
        }
    }
}

/// Why a line is not a request line; codes and messages are the reference
/// provider's (OpenAI's own for `invalid_json_line`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("This line is not parseable as valid JSON: it is not valid UTF-8.")]
    NotUtf8,
    #[error("This line is not parseable as valid JSON.")]
    NotJson,
    #[error("Each line must be a JSON dictionary object")]
    NotAnObject,
    #[error("Missing required parameter: {}", .0.name())]
    Missing(Field),
    #[error("{}", wrong_type_message(*.0))]
    WrongType(Field),
}

fn wrong_type_message(field: Field) -> &'static str {
    match field {
        Field::CustomId => "Custom_id must be a string",
        Field::Method => "Method must be a string",
        Field::Url => "URL must be a string",
        Field::Body => "Body must be a JSON dictionary object",
    }
}

impl LineError {
    pub fn code(self) -> &'static str {
        match self {
            Self::NotUtf8 | Self::NotJson => "invalid_json_line",
            Self::NotAnObject | Self::WrongType(_) => "invalid_request",
            Self::Missing(_) => "missing_required_parameter",
        }
    }

    pub fn param(self) -> Option<&'static str> {
        match self {
            Self::Missing(field) | Self::WrongType(field) => Some(field.name()),
            Self::NotUtf8 | Self::NotJson | Self::NotAnObject => None,
        }
    }

    /// The error as a batch reports it, on 1-based line `line`.
    pub fn at_line(self, line: u64) -> BatchError {
        BatchError {
            code: self.code().to_string(),
            message: self.to_string(),
            param: self.param().map(str::to_string),
            line: Some(line),
        }
    }
}

/// A line read as a JSON object, each field read (or refused) on its own, so
/// that validation can report every field error of a line at once.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestFields {
    pub custom_id: Result<String, LineError>,
    pub method: Result<String, LineError>,
    pub url: Result<String, LineError>,
    pub body: Result<Map<String, Value>, LineError>,
}

impl RequestFields {
    /// Reads one line (without its terminator; surrounding whitespace is fine).
    pub fn parse(bytes: &[u8]) -> Result<Self, LineError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|_| {
            if std::str::from_utf8(bytes).is_err() {
                LineError::NotUtf8
            } else {
                LineError::NotJson
            }
        })?;
        let Value::Object(mut object) = value else {
            return Err(LineError::NotAnObject);
        };
        // Taken out of the object, not copied: a body may be megabytes.
        let mut string = |field: Field| match object.remove(field.name()) {
            None => Err(LineError::Missing(field)),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(LineError::WrongType(field)),
        };
        let custom_id = string(Field::CustomId);
        let method = string(Field::Method);
        let url = string(Field::Url);
        let body = match object.remove(Field::Body.name()) {
            None => Err(LineError::Missing(Field::Body)),
            Some(Value::Object(body)) => Ok(body),
            Some(_) => Err(LineError::WrongType(Field::Body)),
        };
        Ok(Self {
            custom_id,
            method,
            url,
            body,
        })
    }

    /// The request, or the first field error.
    pub fn into_request(self) -> Result<RequestLine, LineError> {
        Ok(RequestLine {
            custom_id: self.custom_id?,
            method: self.method?,
            url: self.url?,
            body: self.body?,
        })
    }
}

/// Reads one line as a request: [`RequestFields::parse`], then its first error.
pub fn parse_request(bytes: &[u8]) -> Result<RequestLine, LineError> {
    RequestFields::parse(bytes)?.into_request()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LINE: &str = r#"{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}"#;

    #[test]
    fn given_a_request_line_then_its_fields_are_read() {
        let request = parse_request(LINE.as_bytes()).expect("a request");
        assert_eq!(
            (
                request.custom_id.as_str(),
                request.method.as_str(),
                request.url.as_str()
            ),
            ("a", "POST", "/v1/chat/completions")
        );
        assert_eq!(Value::Object(request.body), json!({"model": "m"}));
    }

    #[test]
    fn given_a_terminator_or_surrounding_whitespace_then_the_line_reads_the_same() {
        let expected = parse_request(LINE.as_bytes());
        for framed in [
            format!("{LINE}\n"),
            format!("{LINE}\r\n"),
            format!("  {LINE}\t"),
        ] {
            assert_eq!(parse_request(framed.as_bytes()), expected, "{framed:?}");
        }
    }

    #[test]
    fn given_duplicate_keys_then_the_last_value_wins_at_every_level() {
        let line = br#"{"custom_id": "first", "method": "POST", "url": "/v1/x", "body": {"model": "a"}, "custom_id": "last", "body": {"model": "b", "model": "c"}}"#;
        let request = parse_request(line).expect("a request");
        assert_eq!(request.custom_id, "last");
        assert_eq!(Value::Object(request.body), json!({"model": "c"}));
        // A duplicate that is mistyped last is mistyped, whatever came first.
        let line =
            br#"{"custom_id": "a", "custom_id": 1, "method": "POST", "url": "/v1/x", "body": {}}"#;
        assert_eq!(
            parse_request(line),
            Err(LineError::WrongType(Field::CustomId))
        );
    }

    #[test]
    fn given_bytes_that_are_not_an_object_then_the_reason_is_named() {
        let cases: [(&[u8], LineError); 6] = [
            (b"{\"a\":", LineError::NotJson),
            (b"{\"a\":1} x", LineError::NotJson),
            (b"{\"custom_id\": \"\xff\"}", LineError::NotUtf8),
            (b"[1, 2]", LineError::NotAnObject),
            (b"\"text\"", LineError::NotAnObject),
            (b"null", LineError::NotAnObject),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                RequestFields::parse(bytes),
                Err(expected),
                "{}",
                String::from_utf8_lossy(bytes)
            );
            assert_eq!(expected.param(), None);
        }
    }

    #[test]
    fn given_missing_and_mistyped_fields_then_each_field_says_so_and_the_request_names_the_first() {
        let fields = RequestFields::parse(br#"{"method": 1, "body": [], "extra": true}"#)
            .expect("an object");
        assert_eq!(fields.custom_id, Err(LineError::Missing(Field::CustomId)));
        assert_eq!(fields.method, Err(LineError::WrongType(Field::Method)));
        assert_eq!(fields.url, Err(LineError::Missing(Field::Url)));
        assert_eq!(fields.body, Err(LineError::WrongType(Field::Body)));
        assert_eq!(
            fields.into_request(),
            Err(LineError::Missing(Field::CustomId))
        );
    }

    #[test]
    fn given_each_error_then_code_param_and_message_are_the_reference_ones() {
        let cases = [
            (
                LineError::NotJson,
                "invalid_json_line",
                None,
                "This line is not parseable as valid JSON.",
            ),
            (
                LineError::NotAnObject,
                "invalid_request",
                None,
                "Each line must be a JSON dictionary object",
            ),
            (
                LineError::Missing(Field::Body),
                "missing_required_parameter",
                Some("body"),
                "Missing required parameter: body",
            ),
            (
                LineError::WrongType(Field::CustomId),
                "invalid_request",
                Some("custom_id"),
                "Custom_id must be a string",
            ),
            (
                LineError::WrongType(Field::Url),
                "invalid_request",
                Some("url"),
                "URL must be a string",
            ),
        ];
        for (error, code, param, message) in cases {
            let reported = error.at_line(7);
            assert_eq!(
                (
                    reported.code.as_str(),
                    reported.param.as_deref(),
                    reported.message.as_str(),
                    reported.line
                ),
                (code, param, message, Some(7))
            );
        }
    }
}
