//! The upload check of a `purpose=batch` file, run on the bytes as they
//! stream in.
//!
//! It refuses only what OpenAI refuses at upload: a file without requests, one
//! whose first request line is not a JSON object, and one over the limits
//! (200 MB, 50,000 requests). OpenAI takes a file with bad later lines and
//! fails the batch made from it, naming each line; so do we: every line is
//! checked by the validation stage (`jsonl::InputValidator`), which alone knows
//! the endpoint, with the same reader ([`super::request_line`]).

use std::fmt;

use super::jsonl::{is_blank, Line, LineSplitter, MAX_FILE_BYTES, MAX_LINE_BYTES, MAX_REQUESTS};
use super::request_line::{LineError, RequestFields};

/// The limits a batch file is checked against. Tests lower them to reach
/// them cheaply; the service uses [`BatchFileLimits::OPENAI`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchFileLimits {
    pub max_bytes: u64,
    pub max_requests: u64,
}

impl BatchFileLimits {
    /// OpenAI's: "The Batch API only supports .jsonl files up to 200 MB in size",
    /// with at most 50,000 requests.
    pub const OPENAI: Self = Self {
        max_bytes: MAX_FILE_BYTES,
        max_requests: MAX_REQUESTS,
    };
}

impl Default for BatchFileLimits {
    fn default() -> Self {
        Self::OPENAI
    }
}

/// Why a file cannot be a batch input file. Lines are 1-based physical lines,
/// blank ones included, so the number matches what an editor shows. The line
/// errors are about the first non-blank line only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileFormatError {
    NotUtf8 { line: u64 },
    NotJson { line: u64 },
    NotAnObject { line: u64 },
    LineTooLong { line: u64 },
    TooManyRequests { line: u64, max: u64 },
    TooLarge { max: u64 },
    Empty,
}

impl FileFormatError {
    /// The line the error is about, if it is about one.
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::NotUtf8 { line }
            | Self::NotJson { line }
            | Self::NotAnObject { line }
            | Self::LineTooLong { line }
            | Self::TooManyRequests { line, .. } => Some(*line),
            Self::TooLarge { .. } | Self::Empty => None,
        }
    }
}

/// OpenAI's message for a file that is not a batch file, which the details follow.
const NOT_JSONL: &str = "Invalid file format for Batch API. Must be .jsonl";

impl fmt::Display for FileFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = |f: &mut fmt::Formatter<'_>, line: &u64, what: &str| {
            write!(f, "{NOT_JSONL}: line {line}, the first request, {what}.")
        };
        match self {
            Self::NotUtf8 { line } => first(f, line, "is not valid UTF-8"),
            Self::NotJson { line } => first(f, line, "is not valid JSON"),
            Self::NotAnObject { line } => first(f, line, "is not a JSON object"),
            Self::LineTooLong { line } => first(
                f,
                line,
                &format!("is longer than the limit of {MAX_LINE_BYTES} bytes"),
            ),
            Self::Empty => write!(f, "{NOT_JSONL}: the file is empty (no non-blank line)."),
            Self::TooManyRequests { line, max } => write!(
                f,
                "A .jsonl file for the Batch API may hold at most {max} requests: line {line} is request number {}.",
                max + 1
            ),
            Self::TooLarge { max } => write!(
                f,
                "The Batch API only supports .jsonl files of at most {max} bytes: this file is larger."
            ),
        }
    }
}

impl std::error::Error for FileFormatError {}

/// What a file that passed the check holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchFileSummary {
    pub bytes: u64,
    pub requests: u64,
}

/// Checks a batch file chunk by chunk, in bounded memory (one line at most).
///
/// It stops looking at the content at the first error but keeps counting
/// bytes, so a caller that must read the rest of the input anyway (to answer
/// the client cleanly) can go on feeding it for free.
#[derive(Debug)]
pub struct BatchFileCheck {
    limits: BatchFileLimits,
    splitter: LineSplitter,
    bytes: u64,
    requests: u64,
    error: Option<FileFormatError>,
}

impl BatchFileCheck {
    pub fn new(limits: BatchFileLimits) -> Self {
        Self {
            limits,
            splitter: LineSplitter::new(),
            bytes: 0,
            requests: 0,
            error: None,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.bytes = self.bytes.saturating_add(chunk.len() as u64);
        if self.error.is_some() {
            return;
        }
        if self.bytes > self.limits.max_bytes {
            self.error = Some(FileFormatError::TooLarge {
                max: self.limits.max_bytes,
            });
            return;
        }
        self.splitter.push(chunk);
        self.drain();
    }

    /// The first error found so far, if any.
    pub fn error(&self) -> Option<&FileFormatError> {
        self.error.as_ref()
    }

    /// Bytes seen so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Ends the input: the last line needs no trailing newline.
    pub fn finish(mut self) -> Result<BatchFileSummary, FileFormatError> {
        if self.error.is_none() {
            self.splitter.finish();
            self.drain();
        }
        match self.error {
            Some(error) => Err(error),
            None if self.requests == 0 => Err(FileFormatError::Empty),
            None => Ok(BatchFileSummary {
                bytes: self.bytes,
                requests: self.requests,
            }),
        }
    }

    fn drain(&mut self) {
        while self.error.is_none() {
            let Some(line) = self.splitter.next_line() else {
                return;
            };
            self.error = self.check(line);
        }
    }

    /// Counts every request line; reads only the first.
    fn check(&mut self, line: Line) -> Option<FileFormatError> {
        let (line, bytes) = match line {
            Line::TooLong { number } => (number, None),
            Line::Complete { bytes, .. } if is_blank(&bytes) => return None,
            Line::Complete { number, bytes } => (number, Some(bytes)),
        };
        self.requests += 1;
        if self.requests > self.limits.max_requests {
            return Some(FileFormatError::TooManyRequests {
                line,
                max: self.limits.max_requests,
            });
        }
        if self.requests > 1 {
            return None;
        }
        let Some(bytes) = bytes else {
            return Some(FileFormatError::LineTooLong { line });
        };
        // A JSON object is enough here: its fields are the validation stage's
        // to check, as OpenAI reports them on the batch, not at upload.
        match RequestFields::parse(&bytes) {
            Err(LineError::NotUtf8) => Some(FileFormatError::NotUtf8 { line }),
            Err(LineError::NotJson) => Some(FileFormatError::NotJson { line }),
            Err(LineError::NotAnObject) => Some(FileFormatError::NotAnObject { line }),
            // (Field errors come inside the fields, never from `parse`.)
            Ok(_) | Err(LineError::Missing(_) | LineError::WrongType(_)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(content: &[u8]) -> Result<BatchFileSummary, FileFormatError> {
        check_with(content, BatchFileLimits::OPENAI)
    }

    fn check_with(
        content: &[u8],
        limits: BatchFileLimits,
    ) -> Result<BatchFileSummary, FileFormatError> {
        let mut check = BatchFileCheck::new(limits);
        check.push(content);
        check.finish()
    }

    #[test]
    fn given_bom_crlf_blank_lines_and_no_trailing_newline_then_the_file_is_accepted() {
        let content = b"\xEF\xBB\xBF{\"a\":1}\r\n\r\n  \n{\"b\": [1, {\"c\": null}]}";
        assert_eq!(
            check(content),
            Ok(BatchFileSummary {
                bytes: content.len() as u64,
                requests: 2
            })
        );
    }

    #[test]
    fn given_a_bad_first_request_line_then_it_is_named() {
        let cases: [(&[u8], FileFormatError); 6] = [
            (b"\n\n[1,2]\n{}", FileFormatError::NotAnObject { line: 3 }),
            (b"\"text\"\n{}\n", FileFormatError::NotAnObject { line: 1 }),
            (b" \r\n{\"a\":\n{}", FileFormatError::NotJson { line: 2 }),
            (b"{\"a\":1} x\n", FileFormatError::NotJson { line: 1 }),
            (b"[1,\n", FileFormatError::NotJson { line: 1 }),
            (
                b"{\"a\":\"\xff\"}\n{}\n",
                FileFormatError::NotUtf8 { line: 1 },
            ),
        ];
        for (content, expected) in cases {
            assert_eq!(
                check(content),
                Err(expected),
                "{}",
                String::from_utf8_lossy(content)
            );
        }
        let too_long = vec![b'x'; MAX_LINE_BYTES + 1];
        assert_eq!(
            check(&too_long),
            Err(FileFormatError::LineTooLong { line: 1 })
        );
    }

    #[test]
    fn given_bad_lines_after_the_first_then_the_file_is_accepted_and_they_are_counted() {
        let mut content = b"\n{\"custom_id\": 1}\n[1,2]\n{\n\"\xff\"\n\n".to_vec();
        content.extend(vec![b'x'; MAX_LINE_BYTES + 1]);
        assert_eq!(
            check(&content),
            Ok(BatchFileSummary {
                bytes: content.len() as u64,
                requests: 5
            })
        );
    }

    #[test]
    fn given_each_error_then_its_message_mentions_jsonl_and_names_the_line() {
        let cases = [
            (
                FileFormatError::NotAnObject { line: 3 },
                "Invalid file format for Batch API. Must be .jsonl: line 3, the first request, is not a JSON object.",
            ),
            (
                FileFormatError::Empty,
                "Invalid file format for Batch API. Must be .jsonl: the file is empty (no non-blank line).",
            ),
            (
                FileFormatError::TooManyRequests { line: 9, max: 7 },
                "A .jsonl file for the Batch API may hold at most 7 requests: line 9 is request number 8.",
            ),
            (
                FileFormatError::TooLarge { max: 10 },
                "The Batch API only supports .jsonl files of at most 10 bytes: this file is larger.",
            ),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn given_an_empty_or_blank_file_then_it_is_refused() {
        for content in [&b""[..], b"\n\n", b"\xEF\xBB\xBF", b"  \r\n"] {
            assert_eq!(check(content), Err(FileFormatError::Empty));
        }
    }

    #[test]
    fn given_limits_then_the_first_request_beyond_them_is_refused() {
        let limits = BatchFileLimits {
            max_bytes: 1_000,
            max_requests: 2,
        };
        assert_eq!(
            check_with(b"{}\n\n{}\n{}\n", limits),
            Err(FileFormatError::TooManyRequests { line: 4, max: 2 })
        );
        assert_eq!(
            check_with(&vec![b' '; 1_001], limits),
            Err(FileFormatError::TooLarge { max: 1_000 })
        );
        assert!(check_with(b"{}\n{}\n", limits).is_ok());
    }

    #[test]
    fn given_chunks_split_anywhere_then_the_verdict_is_the_same() {
        let content = b"\xEF\xBB\xBF\r\n\n[\"\xc3\xa9\"]\r\n{\"b\":2}\n{}\n";
        for size in 1..content.len() {
            let mut check = BatchFileCheck::new(BatchFileLimits::OPENAI);
            for chunk in content.chunks(size) {
                check.push(chunk);
            }
            assert_eq!(
                check.finish(),
                Err(FileFormatError::NotAnObject { line: 3 }),
                "{size}"
            );
        }
    }

    #[test]
    fn given_an_error_then_later_bytes_are_only_counted() {
        let mut check = BatchFileCheck::new(BatchFileLimits::OPENAI);
        check.push(b"nope\n");
        check.push(b"{}\n");
        assert_eq!(check.bytes(), 8);
        assert_eq!(check.error(), Some(&FileFormatError::NotJson { line: 1 }));
    }
}
