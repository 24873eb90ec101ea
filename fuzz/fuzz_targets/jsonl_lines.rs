//! JSONL input validation over arbitrary bytes, fed in chunks.
//!
//! Input: `[chunk size - 1][options][file bytes...]`. Options: bits 0-2 pick
//! the endpoint, bit 3 whether the upstream's model list is known.
//!
//! Properties: chunking never changes the report; line numbers are the
//! physical lines; every recorded error points at a real line, in order; a
//! line that validates is one execution reads, with the same `custom_id`.

#![no_main]

use std::collections::HashSet;

use lambda_batches::domain::jsonl::{
    check_line, is_blank, validate_bytes, InputValidator, Line, LineSplitter, MAX_RECORDED_ERRORS,
};
use lambda_batches::domain::request_line::parse_request;
use lambda_batches::domain::Endpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [size, options, content @ ..] = data else {
        return;
    };
    let chunk = usize::from(*size) + 1;
    let endpoint = Endpoint::ALL[usize::from(options & 0b111) % Endpoint::ALL.len()];
    let models = || (options & 0b1000 != 0).then(|| HashSet::from(["test-model".to_string()]));

    let mut splitter = LineSplitter::new();
    let mut validator = InputValidator::new(endpoint, models());
    let mut lines = Vec::new();
    for piece in content.chunks(chunk) {
        splitter.push(piece);
        while let Some(line) = splitter.next_line() {
            lines.push(line_bytes(&line));
            validator.check(line);
        }
    }
    splitter.finish();
    while let Some(line) = splitter.next_line() {
        lines.push(line_bytes(&line));
        validator.check(line);
    }
    let report = validator.finish();

    // Line framing: `\n` ends a line, one `\r` before it goes, a last line
    // needs no terminator, a leading BOM is not content.
    let body = content.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(content);
    let mut expected: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    if expected.last().is_some_and(|last| last.is_empty()) {
        expected.pop();
    }
    let expected: Vec<&[u8]> = expected
        .into_iter()
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    assert_eq!(lines.len(), expected.len(), "line count");
    for (number, (got, want)) in lines.iter().zip(&expected).enumerate() {
        assert_eq!(got.1, number as u64 + 1, "line numbers are consecutive");
        assert_eq!(got.0.as_deref(), Some(*want), "line {} content", number + 1);
    }
    assert_eq!(splitter.lines(), expected.len() as u64);

    // Chunking is invisible.
    assert_eq!(
        report,
        validate_bytes(content, endpoint, models()),
        "chunks of {chunk} bytes"
    );

    let requests = expected.iter().filter(|l| !is_blank(l)).count() as u64;
    assert_eq!(
        report.requests, requests,
        "every non-blank line is a request"
    );
    assert!(report.errors.len() <= MAX_RECORDED_ERRORS + 1);
    let mut previous = 0;
    for error in &report.errors {
        assert!(
            !error.message.is_empty() && !error.code.is_empty(),
            "{error:?}"
        );
        // Messages quote user text, but only an excerpt of it.
        assert!(
            error.message.len() <= 2_048,
            "{} bytes",
            error.message.len()
        );
        match error.line {
            Some(line) => {
                assert!(
                    (1..=expected.len() as u64).contains(&line),
                    "{error:?} is not on a line"
                );
                assert!(line >= previous, "errors in input order");
                previous = line;
            }
            None => assert_eq!(error.code, "too_many_errors", "{error:?}"),
        }
    }
    if report.is_valid() {
        assert!(report.batch_errors().is_none());
    }

    // One reading of a line, for validation and for execution.
    let known = models();
    for (bytes, number) in &lines {
        let Some(bytes) = bytes.as_deref().filter(|b| !is_blank(b)) else {
            continue;
        };
        let verdict = check_line(*number, bytes, endpoint, known.as_ref());
        if verdict.errors.is_empty() {
            let request = parse_request(bytes).expect("a line that validates is read by execution");
            assert_eq!(Some(request.custom_id), verdict.custom_id);
        }
    }
});

/// The bytes of a complete line (inputs are far below the line limit) and its number.
fn line_bytes(line: &Line) -> (Option<Vec<u8>>, u64) {
    match line {
        Line::Complete { number, bytes } => (Some(bytes.clone()), *number),
        Line::TooLong { number } => (None, *number),
    }
}
