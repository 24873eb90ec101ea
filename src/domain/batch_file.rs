//! The format check of a `purpose=batch` upload, run on the bytes as they
//! stream in: UTF-8 JSONL, one JSON object per non-blank line, within
//! OpenAI's limits (200 MB, 50,000 requests).
//!
//! This is only the shape of the file, enough to refuse a file that could never
//! be a batch before anything is stored. Whether each line is a valid request
//! for an endpoint is the validation stage's job (`jsonl::InputValidator`),
//! because only a batch names the endpoint.

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use super::jsonl::{is_blank, Line, LineSplitter, MAX_FILE_BYTES, MAX_LINE_BYTES, MAX_REQUESTS};

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
/// blank ones included, so the number matches what an editor shows.
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

impl fmt::Display for FileFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Invalid file format: ")?;
        match self {
            Self::NotUtf8 { line } => write!(f, "line {line} is not valid UTF-8"),
            Self::NotJson { line } => write!(f, "line {line} is not valid JSON"),
            Self::NotAnObject { line } => write!(f, "line {line} is not a JSON object"),
            Self::LineTooLong { line } => write!(
                f,
                "line {line} is longer than the limit of {MAX_LINE_BYTES} bytes"
            ),
            Self::TooManyRequests { line, max } => write!(
                f,
                "line {line} is request number {}; a batch file may hold at most {max} requests",
                max + 1
            ),
            Self::TooLarge { max } => write!(
                f,
                "the file is larger than {max} bytes, the limit for a batch input file"
            ),
            Self::Empty => f.write_str("the file holds no requests (no non-blank lines)"),
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

    fn check(&mut self, line: Line) -> Option<FileFormatError> {
        let (line, bytes) = match line {
            Line::TooLong { number } => return Some(FileFormatError::LineTooLong { line: number }),
            Line::Complete { number, bytes } => (number, bytes),
        };
        if is_blank(&bytes) {
            return None;
        }
        self.requests += 1;
        if self.requests > self.limits.max_requests {
            return Some(FileFormatError::TooManyRequests {
                line,
                max: self.limits.max_requests,
            });
        }
        if std::str::from_utf8(&bytes).is_err() {
            return Some(FileFormatError::NotUtf8 { line });
        }
        json_object_error(&bytes, line)
    }
}

/// Parses a line without building it: only whether it is one JSON object.
fn json_object_error(bytes: &[u8], line: u64) -> Option<FileFormatError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = deserializer
        .deserialize_any(ObjectOnly)
        .and_then(|()| deserializer.end());
    match parsed {
        Ok(()) => None,
        // The visitor refused a non-object before reading all of it: tell a
        // well-formed non-object from malformed JSON by one more (rare) parse.
        Err(e) if e.is_data() => Some(if serde_json::from_slice::<IgnoredAny>(bytes).is_ok() {
            FileFormatError::NotAnObject { line }
        } else {
            FileFormatError::NotJson { line }
        }),
        Err(_) => Some(FileFormatError::NotJson { line }),
    }
}

/// Accepts a JSON object, skipping its content; refuses every other value.
struct ObjectOnly;

impl<'de> Visitor<'de> for ObjectOnly {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
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
    fn given_a_bad_line_then_the_first_one_is_named() {
        let cases: [(&[u8], FileFormatError); 6] = [
            (b"{}\n\n[1,2]\n{", FileFormatError::NotAnObject { line: 3 }),
            (b"{}\n\"text\"\n", FileFormatError::NotAnObject { line: 2 }),
            (b"{}\n{\"a\":\n{}", FileFormatError::NotJson { line: 2 }),
            (b"{\"a\":1} x\n", FileFormatError::NotJson { line: 1 }),
            (b"[1,\n", FileFormatError::NotJson { line: 1 }),
            (
                b"{}\n{\"a\":\"\xff\"}\n",
                FileFormatError::NotUtf8 { line: 2 },
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
    }

    #[test]
    fn given_the_message_then_it_names_the_line() {
        assert_eq!(
            FileFormatError::NotAnObject { line: 3 }.to_string(),
            "Invalid file format: line 3 is not a JSON object"
        );
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
        let content = b"\xEF\xBB\xBF{\"a\":\"\xc3\xa9\"}\r\n{\"b\":2}\n[3]\n";
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
