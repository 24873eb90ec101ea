//! Batch input files: JSONL framing and the validation of every request line.
//!
//! Pure and incremental: bytes go in chunk by chunk, so a 200 MB file is checked
//! in constant memory. The checks, codes and messages follow the llama-stack
//! reference provider, extended where it is silent (method, per-endpoint body
//! fields, duplicates, the request limit).

use std::collections::{HashSet, VecDeque};

use serde_json::{Map, Value};

use super::batch::{BatchError, BatchErrors};
use super::create::Endpoint;
use super::request_line::{LineError, RequestFields};

/// OpenAI's limits for one batch input file.
pub const MAX_REQUESTS: u64 = 50_000;
pub const MAX_FILE_BYTES: u64 = 200 * 1024 * 1024;
/// One request line; far above any real request, small enough for a 128 MB Lambda.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;
/// Errors kept on the batch record, and the bytes they may take: a DynamoDB item
/// is at most 400 KB, and the rest of the batch needs room too.
pub const MAX_RECORDED_ERRORS: usize = 1_000;
pub const MAX_RECORDED_ERROR_BYTES: usize = 256 * 1024;

/// One line of input, without its terminator (`\n` or `\r\n`).
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Complete {
        number: u64,
        bytes: Vec<u8>,
    },
    /// Longer than [`MAX_LINE_BYTES`]: only its number is kept.
    TooLong {
        number: u64,
    },
}

/// Splits a byte stream into numbered lines with bounded memory.
///
/// Numbers are 1-based physical line numbers; blank lines count. A UTF-8 byte
/// order mark at the start of the file is dropped.
#[derive(Debug, Default)]
pub struct LineSplitter {
    /// The first bytes of the file, held until we know whether they are a BOM.
    head: Vec<u8>,
    head_done: bool,
    current: Vec<u8>,
    overflowed: bool,
    number: u64,
    ready: VecDeque<Line>,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl LineSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; complete lines become available from [`Self::next_line`].
    pub fn push(&mut self, chunk: &[u8]) {
        if self.head_done {
            self.split(chunk);
            return;
        }
        self.head.extend_from_slice(chunk);
        // The BOM may itself arrive split across chunks.
        if self.head.len() < BOM.len() && BOM.starts_with(&self.head) {
            return;
        }
        self.release_head();
    }

    fn release_head(&mut self) {
        self.head_done = true;
        let head = std::mem::take(&mut self.head);
        self.split(head.strip_prefix(BOM).unwrap_or(&head));
    }

    fn split(&mut self, mut chunk: &[u8]) {
        while let Some(newline) = chunk.iter().position(|&b| b == b'\n') {
            self.append(&chunk[..newline]);
            self.emit();
            chunk = &chunk[newline + 1..];
        }
        self.append(chunk);
    }

    /// Ends the input: a last line without a trailing newline is still a line.
    pub fn finish(&mut self) {
        if !self.head_done {
            self.release_head();
        }
        if !self.current.is_empty() || self.overflowed {
            self.emit();
        }
    }

    pub fn next_line(&mut self) -> Option<Line> {
        self.ready.pop_front()
    }

    /// Lines seen so far.
    pub fn lines(&self) -> u64 {
        self.number
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.overflowed {
            return;
        }
        if self.current.len() + bytes.len() > MAX_LINE_BYTES + 1 {
            // +1 leaves room for a '\r' that CRLF framing will strip.
            self.overflowed = true;
            self.current = Vec::new();
        } else {
            self.current.extend_from_slice(bytes);
        }
    }

    fn emit(&mut self) {
        self.number += 1;
        let number = self.number;
        if self.overflowed {
            self.overflowed = false;
            self.ready.push_back(Line::TooLong { number });
            return;
        }
        let mut bytes = std::mem::take(&mut self.current);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if bytes.len() > MAX_LINE_BYTES {
            self.ready.push_back(Line::TooLong { number });
        } else {
            self.ready.push_back(Line::Complete { number, bytes });
        }
    }
}

/// Blank (or whitespace-only) lines are skipped but keep their number.
pub fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

fn error(code: &str, line: u64, param: Option<&str>, message: String) -> BatchError {
    BatchError {
        code: code.to_string(),
        message,
        param: param.map(str::to_string),
        line: Some(line),
    }
}

/// Quotes at most 200 characters of user text inside an error message.
fn excerpt(text: &str) -> String {
    const CHARS: usize = 200;
    if text.chars().count() <= CHARS {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(CHARS).collect::<String>())
    }
}

/// What one valid request line contributes to the batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LineVerdict {
    pub errors: Vec<BatchError>,
    pub custom_id: Option<String>,
    pub model: Option<String>,
}

/// Checks one non-blank request line against the batch endpoint.
///
/// The line is read by [`RequestFields::parse`], as execution reads it, and
/// every field error is reported: a line without errors here is one
/// [`super::request_line::parse_request`] accepts.
///
/// `known_models` is the upstream's model list, or `None` to skip that check
/// (when the upstream could not be asked).
pub fn check_line(
    number: u64,
    bytes: &[u8],
    endpoint: Endpoint,
    known_models: Option<&HashSet<String>>,
) -> LineVerdict {
    let mut verdict = LineVerdict::default();
    let fields = match RequestFields::parse(bytes) {
        Ok(fields) => fields,
        Err(e) => {
            verdict.errors.push(e.at_line(number));
            return verdict;
        }
    };
    verdict
        .errors
        .extend(field_error(&fields.custom_id, number));
    verdict.errors.extend(field_error(&fields.method, number));
    verdict.errors.extend(field_error(&fields.url, number));
    if fields.method.as_deref().is_ok_and(|m| m != "POST") {
        verdict.errors.push(error(
            "invalid_request",
            number,
            Some("method"),
            "Only POST is supported as the method of a batch request".to_string(),
        ));
    }
    if fields.url.as_deref().is_ok_and(|u| u != endpoint.as_str()) {
        verdict.errors.push(error(
            "invalid_url",
            number,
            Some("url"),
            "URL provided for this request does not match the batch endpoint".to_string(),
        ));
    }
    verdict.errors.extend(field_error(&fields.body, number));
    if let Ok(body) = &fields.body {
        check_body(number, body, endpoint, known_models, &mut verdict);
    }
    verdict.custom_id = fields.custom_id.ok();
    verdict
}

fn field_error<T>(field: &Result<T, LineError>, number: u64) -> Option<BatchError> {
    field.as_ref().err().map(|e| e.at_line(number))
}

/// The body type a field must have, and how the message names it.
#[derive(Clone, Copy)]
enum Expect {
    String,
    Array,
    StringOrArray,
    StringOrArrayOfStrings,
}

impl Expect {
    fn accepts(self, value: &Value) -> bool {
        match self {
            Self::String => value.is_string(),
            Self::Array => value.is_array(),
            Self::StringOrArray => value.is_string() || value.is_array(),
            Self::StringOrArrayOfStrings => {
                value.is_string()
                    || value
                        .as_array()
                        .is_some_and(|a| a.iter().all(Value::is_string))
            }
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Array => "an array",
            Self::StringOrArray => "a string or array",
            Self::StringOrArrayOfStrings => "a string or array of strings",
        }
    }
}

fn required_body_fields(endpoint: Endpoint) -> &'static [(&'static str, Expect)] {
    match endpoint {
        Endpoint::ChatCompletions => &[("model", Expect::String), ("messages", Expect::Array)],
        Endpoint::Completions => &[("model", Expect::String), ("prompt", Expect::StringOrArray)],
        Endpoint::Embeddings => &[
            ("model", Expect::String),
            ("input", Expect::StringOrArrayOfStrings),
        ],
        Endpoint::Responses => &[("model", Expect::String), ("input", Expect::StringOrArray)],
        Endpoint::Moderations => &[("input", Expect::StringOrArray)],
    }
}

fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

fn check_body(
    number: u64,
    body: &Map<String, Value>,
    endpoint: Endpoint,
    known_models: Option<&HashSet<String>>,
    verdict: &mut LineVerdict,
) {
    // Results come back whole in one line of the output file: no streaming.
    if body
        .get("stream")
        .is_some_and(|s| !matches!(s, Value::Null | Value::Bool(false)))
    {
        verdict.errors.push(error(
            "streaming_unsupported",
            number,
            Some("body.stream"),
            "Streaming is not supported in batch processing".to_string(),
        ));
    }
    for &(name, expect) in required_body_fields(endpoint) {
        let param = format!("body.{name}");
        match body.get(name) {
            None => verdict.errors.push(error(
                "invalid_request",
                number,
                Some(&param),
                format!("{} parameter is required", capitalized(name)),
            )),
            Some(value) if !expect.accepts(value) => verdict.errors.push(error(
                "invalid_request",
                number,
                Some(&param),
                format!("{} must be {}", capitalized(name), expect.describe()),
            )),
            Some(_) => {}
        }
    }
    // Moderations may name a model, but need not.
    if let Some(Value::String(model)) = body.get("model") {
        if known_models.is_some_and(|known| !known.contains(model)) {
            verdict.errors.push(error(
                "model_not_found",
                number,
                Some("body.model"),
                format!(
                    "Model '{}' does not exist or is not supported",
                    excerpt(model)
                ),
            ));
        }
        verdict.model = Some(model.clone());
    }
}

/// Checks a whole input file, line by line, keeping state across lines:
/// duplicate `custom_id`s and the request limit.
pub struct InputValidator {
    endpoint: Endpoint,
    known_models: Option<HashSet<String>>,
    /// 128-bit digests, not the ids: 50,000 ids of any length fit in under 1 MB.
    custom_ids: HashSet<u128>,
    requests: u64,
    first_model: Option<String>,
    errors: Vec<BatchError>,
    recorded_bytes: usize,
    omitted: u64,
}

/// The outcome of validating an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationReport {
    /// Errors in input order, at most [`MAX_RECORDED_ERRORS`] of them plus one
    /// `too_many_errors` entry saying how many more there were.
    pub errors: Vec<BatchError>,
    pub requests: u64,
    pub model: Option<String>,
}

impl ValidationReport {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn batch_errors(&self) -> Option<BatchErrors> {
        (!self.errors.is_empty()).then(|| BatchErrors {
            object: "list".to_string(),
            data: self.errors.clone(),
        })
    }
}

impl InputValidator {
    pub fn new(endpoint: Endpoint, known_models: Option<HashSet<String>>) -> Self {
        Self {
            endpoint,
            known_models,
            custom_ids: HashSet::new(),
            requests: 0,
            first_model: None,
            errors: Vec::new(),
            recorded_bytes: 0,
            omitted: 0,
        }
    }

    pub fn check(&mut self, line: Line) {
        let (number, bytes) = match line {
            Line::TooLong { number } => {
                self.record(error(
                    "invalid_request",
                    number,
                    None,
                    format!("This line is longer than the limit of {MAX_LINE_BYTES} bytes"),
                ));
                return;
            }
            Line::Complete { number, bytes } => (number, bytes),
        };
        if is_blank(&bytes) {
            return;
        }
        self.requests += 1;
        if self.requests == MAX_REQUESTS + 1 {
            self.record(error(
                "invalid_request",
                number,
                None,
                format!(
                    "The input file has more than {MAX_REQUESTS} requests, the limit for one batch"
                ),
            ));
        }
        let verdict = check_line(number, &bytes, self.endpoint, self.known_models.as_ref());
        for e in verdict.errors {
            self.record(e);
        }
        if let Some(custom_id) = verdict.custom_id {
            if !self.custom_ids.insert(digest(&custom_id)) {
                self.record(error(
                    "invalid_request",
                    number,
                    Some("custom_id"),
                    format!(
                        "Duplicate custom_id '{}': each request in a batch needs a unique custom_id",
                        excerpt(&custom_id)
                    ),
                ));
            }
        }
        if self.first_model.is_none() {
            self.first_model = verdict.model;
        }
    }

    fn record(&mut self, e: BatchError) {
        let size = e.message.len() + e.code.len() + e.param.as_ref().map_or(0, String::len) + 64;
        if self.errors.len() < MAX_RECORDED_ERRORS
            && self.recorded_bytes + size <= MAX_RECORDED_ERROR_BYTES
        {
            self.recorded_bytes += size;
            self.errors.push(e);
        } else {
            self.omitted += 1;
        }
    }

    pub fn finish(mut self) -> ValidationReport {
        if self.omitted > 0 {
            self.errors.push(BatchError {
                code: "too_many_errors".to_string(),
                message: format!(
                    "{} more errors were found but not recorded; fix the errors above and check the file again",
                    self.omitted
                ),
                param: None,
                line: None,
            });
        }
        ValidationReport {
            errors: self.errors,
            requests: self.requests,
            model: self.first_model,
        }
    }
}

fn digest(text: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(text.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash[..16]);
    u128::from_be_bytes(first)
}

/// Splits and checks a whole in-memory file; for tests and small inputs.
pub fn validate_bytes(
    content: &[u8],
    endpoint: Endpoint,
    known_models: Option<HashSet<String>>,
) -> ValidationReport {
    let mut splitter = LineSplitter::new();
    let mut validator = InputValidator::new(endpoint, known_models);
    splitter.push(content);
    splitter.finish();
    while let Some(line) = splitter.next_line() {
        validator.check(line);
    }
    validator.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CHAT: Endpoint = Endpoint::ChatCompletions;

    fn chat_line(custom_id: &str) -> Value {
        json!({
            "custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "test-model", "messages": [{"role": "user", "content": "Hello"}]},
        })
    }

    fn jsonl(lines: &[Value]) -> Vec<u8> {
        lines
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .into_bytes()
    }

    fn errors_of(content: &[u8], endpoint: Endpoint) -> Vec<BatchError> {
        validate_bytes(content, endpoint, None).errors
    }

    fn only_error(line: Value, endpoint: Endpoint) -> BatchError {
        let errors = errors_of(&jsonl(std::slice::from_ref(&line)), endpoint);
        assert_eq!(errors.len(), 1, "{line}: {errors:?}");
        errors.into_iter().next().unwrap()
    }

    fn without(mut line: Value, path: &[&str]) -> Value {
        let (last, parents) = path.split_last().unwrap();
        let mut target = &mut line;
        for p in parents {
            target = &mut target[*p];
        }
        target.as_object_mut().unwrap().remove(*last);
        line
    }

    fn with(mut line: Value, path: &[&str], value: Value) -> Value {
        let (last, parents) = path.split_last().unwrap();
        let mut target = &mut line;
        for p in parents {
            target = &mut target[*p];
        }
        target[*last] = value;
        line
    }

    #[test]
    fn valid_lines_pass_and_report_count_and_first_model() {
        let report = validate_bytes(&jsonl(&[chat_line("a"), chat_line("b")]), CHAT, None);
        assert!(report.is_valid(), "{:?}", report.errors);
        assert_eq!(report.requests, 2);
        assert_eq!(report.model.as_deref(), Some("test-model"));
    }

    #[test]
    fn an_empty_file_is_valid_with_no_requests() {
        let report = validate_bytes(b"", CHAT, None);
        assert_eq!((report.errors.len(), report.requests), (0, 0));
    }

    #[test]
    fn missing_top_level_parameters_use_the_reference_messages() {
        for param in ["custom_id", "method", "url", "body"] {
            let e = only_error(without(chat_line("a"), &[param]), CHAT);
            assert_eq!(e.code, "missing_required_parameter");
            assert_eq!(e.message, format!("Missing required parameter: {param}"));
            assert_eq!((e.param.as_deref(), e.line), (Some(param), Some(1)));
        }
    }

    #[test]
    fn missing_body_parameters_are_per_endpoint() {
        let cases: [(Endpoint, Value, &str, &str); 8] = [
            (
                CHAT,
                without(chat_line("a"), &["body", "model"]),
                "body.model",
                "Model parameter is required",
            ),
            (
                CHAT,
                without(chat_line("a"), &["body", "messages"]),
                "body.messages",
                "Messages parameter is required",
            ),
            (
                Endpoint::Completions,
                json!({"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"model": "m"}}),
                "body.prompt",
                "Prompt parameter is required",
            ),
            (
                Endpoint::Completions,
                json!({"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"prompt": "p"}}),
                "body.model",
                "Model parameter is required",
            ),
            (
                Endpoint::Embeddings,
                json!({"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}}),
                "body.input",
                "Input parameter is required",
            ),
            (
                Endpoint::Responses,
                json!({"custom_id": "a", "method": "POST", "url": "/v1/responses", "body": {"input": "hi"}}),
                "body.model",
                "Model parameter is required",
            ),
            (
                Endpoint::Responses,
                json!({"custom_id": "a", "method": "POST", "url": "/v1/responses", "body": {"model": "m"}}),
                "body.input",
                "Input parameter is required",
            ),
            (
                Endpoint::Moderations,
                json!({"custom_id": "a", "method": "POST", "url": "/v1/moderations", "body": {}}),
                "body.input",
                "Input parameter is required",
            ),
        ];
        for (endpoint, line, param, message) in cases {
            let e = only_error(line, endpoint);
            assert_eq!(
                (e.code.as_str(), e.param.as_deref(), e.message.as_str()),
                ("invalid_request", Some(param), message)
            );
        }
        let moderation = json!({"custom_id": "a", "method": "POST", "url": "/v1/moderations", "body": {"input": "x"}});
        assert!(errors_of(&jsonl(&[moderation]), Endpoint::Moderations).is_empty());
    }

    #[test]
    fn mistyped_parameters_use_the_reference_messages() {
        let cases = [
            (
                with(chat_line("a"), &["custom_id"], json!(12345)),
                "custom_id",
                "Custom_id must be a string",
            ),
            (
                with(chat_line("a"), &["url"], json!(123)),
                "url",
                "URL must be a string",
            ),
            (
                with(chat_line("a"), &["method"], json!(["POST"])),
                "method",
                "Method must be a string",
            ),
            (
                with(chat_line("a"), &["body"], json!(["not", "valid"])),
                "body",
                "Body must be a JSON dictionary object",
            ),
            (
                with(chat_line("a"), &["body", "model"], json!(123)),
                "body.model",
                "Model must be a string",
            ),
            (
                with(
                    chat_line("a"),
                    &["body", "messages"],
                    json!("invalid messages format"),
                ),
                "body.messages",
                "Messages must be an array",
            ),
        ];
        for (line, param, message) in cases {
            let e = only_error(line, CHAT);
            assert_eq!(
                (e.code.as_str(), e.param.as_deref(), e.message.as_str()),
                ("invalid_request", Some(param), message)
            );
        }
        let embeddings = json!({"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": [1, 2]}});
        assert_eq!(
            only_error(embeddings, Endpoint::Embeddings).message,
            "Input must be a string or array of strings"
        );
    }

    #[test]
    fn invalid_json_and_non_objects_are_reported_by_line() {
        let content = format!(
            "{}\n{{invalid json here\n[\"not\",\"a\",\"request\",\"object\"]\n",
            chat_line("a")
        );
        let errors = errors_of(content.as_bytes(), CHAT);
        assert_eq!(errors.len(), 2);
        assert_eq!(
            (
                errors[0].code.as_str(),
                errors[0].line,
                errors[0].param.as_deref()
            ),
            ("invalid_json_line", Some(2), None)
        );
        assert_eq!(
            errors[0].message,
            "This line is not parseable as valid JSON."
        );
        assert_eq!(
            (errors[1].code.as_str(), errors[1].line),
            ("invalid_request", Some(3))
        );
        assert_eq!(
            errors[1].message,
            "Each line must be a JSON dictionary object"
        );
    }

    #[test]
    fn url_method_and_stream_are_checked() {
        let e = only_error(
            with(chat_line("a"), &["url"], json!("/v1/embeddings")),
            CHAT,
        );
        assert_eq!(
            (e.code.as_str(), e.param.as_deref()),
            ("invalid_url", Some("url"))
        );
        assert_eq!(
            e.message,
            "URL provided for this request does not match the batch endpoint"
        );
        let e = only_error(with(chat_line("a"), &["method"], json!("GET")), CHAT);
        assert_eq!(
            (e.code.as_str(), e.param.as_deref()),
            ("invalid_request", Some("method"))
        );
        let e = only_error(with(chat_line("a"), &["body", "stream"], json!(true)), CHAT);
        assert_eq!(
            (e.code.as_str(), e.param.as_deref()),
            ("streaming_unsupported", Some("body.stream"))
        );
        assert!(errors_of(
            &jsonl(&[with(chat_line("a"), &["body", "stream"], json!(false))]),
            CHAT
        )
        .is_empty());
    }

    #[test]
    fn several_errors_on_one_line_are_all_reported() {
        let line = json!({"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}});
        let codes: Vec<String> = errors_of(&jsonl(&[line]), CHAT)
            .into_iter()
            .map(|e| e.code)
            .collect();
        assert!(codes.contains(&"invalid_url".to_string()), "{codes:?}");
        assert!(codes.contains(&"invalid_request".to_string()), "{codes:?}");
    }

    #[test]
    fn unknown_models_are_reported_only_when_the_model_list_is_known() {
        let line = with(
            chat_line("a"),
            &["body", "model"],
            json!("nonexistent-model"),
        );
        let known: HashSet<String> = ["test-model".to_string()].into();
        let report = validate_bytes(&jsonl(std::slice::from_ref(&line)), CHAT, Some(known));
        assert_eq!(report.errors.len(), 1);
        let e = &report.errors[0];
        assert_eq!(
            (e.code.as_str(), e.param.as_deref(), e.line),
            ("model_not_found", Some("body.model"), Some(1))
        );
        assert_eq!(
            e.message,
            "Model 'nonexistent-model' does not exist or is not supported"
        );
        assert!(validate_bytes(&jsonl(&[line]), CHAT, None).is_valid());
    }

    #[test]
    fn repeated_keys_keep_their_last_value_as_execution_reads_them() {
        let valid_last = br#"{"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}, "body": {"model": "m", "messages": []}, "custom_id": "y"}"#;
        let verdict = check_line(1, valid_last, CHAT, None);
        assert!(verdict.errors.is_empty(), "{:?}", verdict.errors);
        assert_eq!(verdict.custom_id.as_deref(), Some("y"));
        let request = crate::domain::request_line::parse_request(valid_last).expect("runs");
        assert_eq!(request.custom_id, "y");

        let invalid_last = br#"{"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "messages": []}, "body": {"model": "m"}}"#;
        let errors = check_line(1, invalid_last, CHAT, None).errors;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].param.as_deref(), Some("body.messages"));
    }

    #[test]
    fn duplicate_custom_ids_are_reported_at_the_repeat() {
        let errors = errors_of(
            &jsonl(&[chat_line("a"), chat_line("b"), chat_line("a")]),
            CHAT,
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(
            (errors[0].line, errors[0].param.as_deref()),
            (Some(3), Some("custom_id"))
        );
    }

    #[test]
    fn crlf_bom_blank_lines_and_a_missing_final_newline_are_tolerated() {
        let line = chat_line("a").to_string();
        let content = format!("\u{FEFF}{line}\r\n\r\n   \n{}", chat_line("b"));
        let report = validate_bytes(content.as_bytes(), CHAT, None);
        assert!(report.is_valid(), "{:?}", report.errors);
        assert_eq!(report.requests, 2);
        let broken = format!("\u{FEFF}{line}\r\n\r\n{{oops");
        assert_eq!(
            errors_of(broken.as_bytes(), CHAT)[0].line,
            Some(3),
            "blank lines keep their numbers"
        );
    }

    #[test]
    fn invalid_utf8_is_an_invalid_json_line() {
        let mut content = jsonl(&[chat_line("a")]);
        content.extend_from_slice(b"{\"custom_id\": \"\xff\xfe\"}\n");
        let errors = errors_of(&content, CHAT);
        assert_eq!(
            (errors[0].code.as_str(), errors[0].line),
            ("invalid_json_line", Some(2))
        );
        assert!(errors[0].message.contains("UTF-8"));
    }

    #[test]
    fn a_one_megabyte_line_is_fine_and_an_oversized_line_is_reported() {
        let big = with(
            chat_line("a"),
            &["body", "messages"],
            json!([{"role": "user", "content": "x".repeat(1024 * 1024)}]),
        );
        assert!(validate_bytes(&jsonl(&[big]), CHAT, None).is_valid());
        let huge = format!("{}\n{}\n", "y".repeat(MAX_LINE_BYTES + 10), chat_line("b"));
        let errors = errors_of(huge.as_bytes(), CHAT);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, Some(1));
    }

    #[test]
    fn more_than_50000_requests_fail_once_at_line_50001() {
        let line = format!("{}\n", chat_line("x"));
        let mut content = String::with_capacity(line.len() * 50_010);
        for i in 0..50_000 {
            content.push_str(&line.replacen("\"x\"", &format!("\"{i}\""), 1));
        }
        let at_limit = validate_bytes(content.as_bytes(), CHAT, None);
        assert!(at_limit.is_valid());
        assert_eq!(at_limit.requests, 50_000);
        content.push_str(&line);
        let report = validate_bytes(content.as_bytes(), CHAT, None);
        assert_eq!(report.requests, 50_001);
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[0].line, Some(50_001));
    }

    #[test]
    fn errors_are_capped_and_the_rest_counted() {
        let content = "{bad\n".repeat(MAX_RECORDED_ERRORS + 250);
        let report = validate_bytes(content.as_bytes(), CHAT, None);
        assert_eq!(report.errors.len(), MAX_RECORDED_ERRORS + 1);
        let last = report.errors.last().unwrap();
        assert_eq!(last.code, "too_many_errors");
        assert!(
            last.message.starts_with("250 more errors"),
            "{}",
            last.message
        );
        let bytes = serde_json::to_vec(&report.batch_errors()).unwrap().len();
        assert!(bytes < MAX_RECORDED_ERROR_BYTES + 1024, "{bytes}");
    }

    #[test]
    fn recorded_errors_stay_under_the_byte_budget_with_long_messages() {
        let long_model = "m".repeat(100_000);
        let line = |i: usize| {
            with(
                chat_line(&i.to_string()),
                &["body", "model"],
                json!(long_model),
            )
        };
        let content = jsonl(&(0..2_000).map(line).collect::<Vec<_>>());
        let report = validate_bytes(&content, CHAT, Some(HashSet::new()));
        let bytes = serde_json::to_vec(&report.batch_errors()).unwrap().len();
        assert!(bytes <= MAX_RECORDED_ERROR_BYTES + 1024, "{bytes}");
        assert_eq!(report.errors.last().unwrap().code, "too_many_errors");
    }

    #[test]
    fn splitting_is_independent_of_chunk_boundaries() {
        let content = format!(
            "\u{FEFF}{}\r\n\n{{bad\r\n{}",
            chat_line("a"),
            chat_line("b")
        )
        .into_bytes();
        let whole = validate_bytes(&content, CHAT, None);
        for size in [1, 2, 3, 5, 17, 64] {
            let mut splitter = LineSplitter::new();
            let mut validator = InputValidator::new(CHAT, None);
            for chunk in content.chunks(size) {
                splitter.push(chunk);
                while let Some(line) = splitter.next_line() {
                    validator.check(line);
                }
            }
            splitter.finish();
            while let Some(line) = splitter.next_line() {
                validator.check(line);
            }
            assert_eq!(validator.finish(), whole, "chunk size {size}");
        }
    }
}
