//! How a batch's input is divided for execution, and how committed work is
//! recognised: pure arithmetic over byte offsets, shared by every worker.
//!
//! The input file is cut into byte ranges (shards). A line belongs to the range
//! holding its first byte, so ranges never split ownership of a line. Workers
//! commit *segments*: a contiguous run of lines `[start, end)` of one shard,
//! keyed by `start`. A segment's `end` is where the next one starts, so each
//! shard is a chain of segments, and two workers racing on one shard commit the
//! same keys: the first commit of a key wins, the other attempt's results are
//! dropped. The batch is done when the committed segments cover every byte.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::file::FileId;

/// A half-open byte range of the input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The most shards one batch is cut into, whatever the shard size asks: a
/// DynamoDB batch item keeps a resume point (about 30 bytes) per shard, under
/// its 400 KB limit.
pub const MAX_SHARDS: u64 = 4_096;

/// The shards of a file of `file_bytes`, each at most `shard_bytes` long, or
/// longer where that would make more than [`MAX_SHARDS`]. An empty file has
/// no shards.
pub fn shards(file_bytes: u64, shard_bytes: u64) -> Vec<ByteRange> {
    let shard_bytes = shard_bytes.max(file_bytes.div_ceil(MAX_SHARDS)).max(1);
    (0..file_bytes.div_ceil(shard_bytes))
        .map(|i| ByteRange {
            start: i * shard_bytes,
            end: ((i + 1) * shard_bytes).min(file_bytes),
        })
        .collect()
}

/// A committed run of lines: where its results are, and what they counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub end: u64,
    /// Blob keys of this segment's output and error lines, when it has any.
    pub output_part: Option<String>,
    pub error_part: Option<String>,
    pub completed: u64,
    pub failed: u64,
    /// Upstream attempts beyond the first, summed over the segment's lines.
    #[serde(default)]
    pub retries: u64,
    /// Upstream latency of the segment's lines, for the batch's percentiles.
    #[serde(default)]
    pub latency: LatencyHistogram,
}

/// A log-scale histogram of milliseconds: eight buckets per doubling, so a
/// percentile read from it is within about 9 %, and a segment stores only the
/// few buckets its lines fell in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LatencyHistogram(Vec<(u32, u64)>);

impl LatencyHistogram {
    fn bucket(ms: u64) -> u32 {
        // log2(ms + 1) * 8, so 0 ms is bucket 0.
        ((ms as f64 + 1.0).log2() * 8.0) as u32
    }

    fn upper_bound(bucket: u32) -> u64 {
        (2f64.powf(f64::from(bucket + 1) / 8.0) - 1.0).ceil() as u64
    }

    pub fn record(&mut self, ms: u64) {
        self.add(Self::bucket(ms), 1);
    }

    fn add(&mut self, bucket: u32, count: u64) {
        match self.0.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(i) => self.0[i].1 += count,
            Err(i) => self.0.insert(i, (bucket, count)),
        }
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (bucket, count) in &other.0 {
            self.add(*bucket, *count);
        }
    }

    pub fn count(&self) -> u64 {
        self.0.iter().map(|(_, c)| c).sum()
    }

    /// The latency at or below which `p` (0..=1) of the lines fell, in ms.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in &self.0 {
            seen += count;
            if seen >= rank {
                return Some(Self::upper_bound(*bucket));
            }
        }
        self.0.last().map(|(b, _)| Self::upper_bound(*b))
    }
}

/// The `id` of one request line's result in the output and error files:
/// `batch_req_` + 32 hex digits, derived from the batch and the line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchRequestId(String);

impl BatchRequestId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BatchRequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Committed segments, keyed by their start offset.
pub type Segments = BTreeMap<u64, Segment>;

/// Where work on `shard` must resume: the first offset its chain of committed
/// segments does not cover, or `None` when the shard is done. Takes the
/// segments' `(start, end)` pairs in start order, as a store reads them
/// without the rest of each segment.
pub fn resume_point(ends: impl IntoIterator<Item = (u64, u64)>, shard: ByteRange) -> Option<u64> {
    let mut at = shard.start;
    for (start, end) in ends {
        if at >= shard.end || start > at {
            break;
        }
        if start == at && end > at {
            at = end;
        }
    }
    (at < shard.end).then_some(at)
}

/// The segments of one shard's committed chain: from `shard_start`, each
/// segment starting where the one before ended, up to `chain_end`. A record
/// written past the chain's end (by an attempt the batch refused) is left out.
pub fn chain(segments: &Segments, shard_start: u64, chain_end: u64) -> Vec<(u64, &Segment)> {
    let mut chain = Vec::new();
    let mut at = shard_start;
    while at < chain_end {
        match segments.get(&at) {
            Some(segment) if segment.end > at => {
                chain.push((at, segment));
                at = segment.end;
            }
            _ => break,
        }
    }
    chain
}

/// Bytes the committed segments cover. Segments never overlap (each starts
/// where a committed one ended, or at a shard start), so this is a plain sum.
pub fn covered_bytes(segments: &Segments) -> u64 {
    segments
        .iter()
        .map(|(start, s)| s.end.saturating_sub(*start))
        .sum()
}

/// The uncovered ranges of `file_bytes`, in order: what an expired batch never ran.
pub fn gaps(segments: &Segments, file_bytes: u64) -> Vec<ByteRange> {
    let mut gaps = Vec::new();
    let mut at = 0;
    for (start, segment) in segments {
        if *start > at {
            gaps.push(ByteRange {
                start: at,
                end: *start,
            });
        }
        at = at.max(segment.end);
    }
    if at < file_bytes {
        gaps.push(ByteRange {
            start: at,
            end: file_bytes,
        });
    }
    gaps
}

/// What a derived id is derived from: one batch, as created. The batch id
/// alone is not enough: an idempotency key reused after its record's retention
/// makes a new batch under the same id, which must not adopt the old batch's
/// files or request ids. Its creation time (microseconds) tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInstance<'a> {
    pub batch_id: &'a str,
    pub created_us: i64,
}

impl BatchInstance<'_> {
    fn digest(&self, purpose: &str, detail: &[u8]) -> String {
        let mut hasher = Sha256::new();
        for part in [purpose.as_bytes(), self.batch_id.as_bytes(), detail] {
            // Length-prefixed, so no two different tuples hash alike.
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        hasher.update(self.created_us.to_be_bytes());
        hex::encode(hasher.finalize())
    }

    /// The `id` of a request line in the output: stable for a line of a batch,
    /// so a line run twice after a crash gets the same id both times.
    pub fn request_id(&self, line_offset: u64) -> BatchRequestId {
        let digest = self.digest("request", &line_offset.to_be_bytes());
        BatchRequestId(format!("batch_req_{}", &digest[..32]))
    }

    /// The id of the batch's output or error file: derived, so a finalization
    /// run twice creates the same file once.
    pub fn result_file_id(&self, kind: ResultFile) -> FileId {
        let digest = self.digest("result-file", kind.as_str().as_bytes());
        FileId::from_derived(&digest[..32])
    }
}

/// The two files a finished batch may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFile {
    Output,
    Error,
}

impl ResultFile {
    pub const ALL: [Self; 2] = [Self::Output, Self::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Output => "output",
            Self::Error => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(end: u64) -> Segment {
        Segment {
            end,
            ..Segment::default()
        }
    }

    #[test]
    fn latency_percentiles_are_within_a_bucket_of_the_truth() {
        let mut histogram = LatencyHistogram::default();
        for ms in 1..=1000 {
            histogram.record(ms);
        }
        let mut other = LatencyHistogram::default();
        other.record(5000);
        histogram.merge(&other);
        assert_eq!(histogram.count(), 1001);
        for (p, truth) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0)] {
            let got = histogram.percentile(p).unwrap() as f64;
            assert!((got - truth).abs() / truth < 0.1, "p{p}: {got} vs {truth}");
        }
        assert!(histogram.percentile(1.0).unwrap() >= 5000);
        assert_eq!(LatencyHistogram::default().percentile(0.5), None);
    }

    #[test]
    fn shards_cover_the_file_exactly_once() {
        assert_eq!(shards(0, 10), vec![]);
        assert_eq!(shards(10, 10), vec![ByteRange { start: 0, end: 10 }]);
        assert_eq!(
            shards(25, 10),
            vec![
                ByteRange { start: 0, end: 10 },
                ByteRange { start: 10, end: 20 },
                ByteRange { start: 20, end: 25 },
            ]
        );
        for size in [1, 7, 100, 1_000] {
            let total: u64 = shards(997, size).iter().map(ByteRange::len).sum();
            assert_eq!(total, 997);
        }
    }

    fn ends_of(segments: &Segments) -> Vec<(u64, u64)> {
        segments.iter().map(|(start, s)| (*start, s.end)).collect()
    }

    #[test]
    fn a_file_is_cut_into_at_most_max_shards() {
        let file = 200 * 1024 * 1024;
        let cut = shards(file, 512);
        assert_eq!(cut.len() as u64, MAX_SHARDS);
        assert_eq!(cut.iter().map(ByteRange::len).sum::<u64>(), file);
        assert_eq!(shards(10_000, 512).len(), 20, "small files as asked");
    }

    #[test]
    fn a_shard_resumes_after_its_committed_chain() {
        let shard = ByteRange {
            start: 100,
            end: 200,
        };
        let mut segments = Segments::new();
        assert_eq!(resume_point(ends_of(&segments), shard), Some(100));
        segments.insert(100, segment(130));
        assert_eq!(resume_point(ends_of(&segments), shard), Some(130));
        segments.insert(130, segment(210)); // the last line runs past the shard end
        assert_eq!(resume_point(ends_of(&segments), shard), None);
        segments.insert(0, segment(100));
        assert_eq!(
            resume_point(ends_of(&segments), shard),
            None,
            "other shards do not matter"
        );
    }

    #[test]
    fn a_chain_stops_at_its_end_and_leaves_out_refused_records() {
        let mut segments = Segments::new();
        segments.insert(10, segment(20));
        segments.insert(20, segment(35));
        segments.insert(35, segment(50)); // written, but the batch refused it
        segments.insert(22, segment(40)); // an attempt that lost start 20
        let starts: Vec<u64> = chain(&segments, 10, 35).iter().map(|(s, _)| *s).collect();
        assert_eq!(starts, vec![10, 20]);
        assert!(
            chain(&segments, 0, 35).is_empty(),
            "no segment at the shard start"
        );
        let ends = segments.iter().map(|(s, seg)| (*s, seg.end));
        assert_eq!(
            resume_point(ends, ByteRange { start: 10, end: 60 }),
            Some(50)
        );
    }

    #[test]
    fn coverage_and_gaps_agree() {
        let mut segments = Segments::new();
        segments.insert(0, segment(30));
        segments.insert(50, segment(80));
        assert_eq!(covered_bytes(&segments), 60);
        assert_eq!(
            gaps(&segments, 100),
            vec![
                ByteRange { start: 30, end: 50 },
                ByteRange {
                    start: 80,
                    end: 100
                }
            ]
        );
        segments.insert(30, segment(50));
        segments.insert(80, segment(100));
        assert_eq!(covered_bytes(&segments), 100);
        assert!(gaps(&segments, 100).is_empty());
    }

    #[test]
    fn request_ids_are_stable_per_line_and_distinct_across_lines_and_batches() {
        let a = BatchInstance {
            batch_id: "batch_a",
            created_us: 1,
        };
        let b = BatchInstance {
            batch_id: "batch_b",
            created_us: 1,
        };
        let a_again = BatchInstance {
            batch_id: "batch_a",
            created_us: 2,
        };
        assert_eq!(a.request_id(7), a.request_id(7));
        assert_ne!(a.request_id(7), a.request_id(8));
        assert_ne!(a.request_id(7), b.request_id(7));
        assert_ne!(a.request_id(7), a_again.request_id(7));
        assert!(a.request_id(0).as_str().starts_with("batch_req_"));
    }

    #[test]
    fn result_file_ids_are_stable_and_distinct_per_kind_and_batch_instance() {
        let a = BatchInstance {
            batch_id: "batch_a",
            created_us: 1,
        };
        let a_again = BatchInstance {
            batch_id: "batch_a",
            created_us: 2,
        };
        let output = a.result_file_id(ResultFile::Output);
        assert_eq!(output, a.result_file_id(ResultFile::Output));
        assert_ne!(output, a.result_file_id(ResultFile::Error));
        assert_ne!(output, a_again.result_file_id(ResultFile::Output));
        assert_eq!(FileId::parse(output.as_str()), Some(output));
    }
}
