//! `POST /v1/batches`: the request body, validated at the edge.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::batch::{
    Batch, BatchId, BatchObjectType, BatchStatus, RequestCounts, COMPLETION_WINDOW_SECS,
};
use super::validation::{JsonKind, ValidationError};

/// Batch endpoints that lambda-batches can execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Moderations,
}

impl Endpoint {
    pub const ALL: [Endpoint; 5] = [
        Self::ChatCompletions,
        Self::Completions,
        Self::Embeddings,
        Self::Responses,
        Self::Moderations,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Responses => "/v1/responses",
            Self::Moderations => "/v1/moderations",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == value)
    }
}

/// `output_expires_after`: when the batch's output files expire.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutputExpiresAfter {
    pub anchor: String,
    pub seconds: i64,
}

/// A validated create request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateBatch {
    pub input_file_id: String,
    pub endpoint: Endpoint,
    pub completion_window: String,
    pub metadata: Option<BTreeMap<String, String>>,
    pub output_expires_after: Option<OutputExpiresAfter>,
    /// The body's `idempotency_key` (the llama-stack convention), unvalidated;
    /// the API reconciles it with the `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// An extension (sent with the SDK's `extra_body`): at most this many of the
    /// batch's lines in flight per shard, below the service-wide limit.
    pub max_concurrency: Option<u32>,
}

/// The bounds of `max_concurrency`.
pub const MAX_CONCURRENCY: std::ops::RangeInclusive<i64> = 1..=1024;

// Limits from OpenAI's `Metadata` and `BatchFileExpirationAfter` schemas.
pub const MAX_METADATA_PAIRS: usize = 16;
pub const MAX_METADATA_KEY_CHARS: usize = 64;
pub const MAX_METADATA_VALUE_CHARS: usize = 512;
pub const OUTPUT_EXPIRY_SECONDS: std::ops::RangeInclusive<i64> = 3600..=2_592_000;
/// Generous for file ids, small enough to keep storage keys and items tiny.
pub const MAX_INPUT_FILE_ID_CHARS: usize = 256;

/// Every field the create body may have (also the properties of its OpenAPI schema).
pub const KNOWN_FIELDS: [&str; 7] = [
    "input_file_id",
    "endpoint",
    "completion_window",
    "metadata",
    "output_expires_after",
    "idempotency_key",
    "max_concurrency",
];

impl CreateBatch {
    /// Parses and validates a request body. Every failure names its field.
    pub fn from_json(body: &[u8]) -> Result<Self, ValidationError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ValidationError::new(
                "invalid_json",
                None,
                format!("The request body is not valid JSON ({e})."),
            )
        })?;
        let Value::Object(mut fields) = value else {
            return Err(ValidationError::new(
                "invalid_type",
                None,
                format!(
                    "The request body must be a JSON object, but got {} instead.",
                    JsonKind::of(&value)
                ),
            ));
        };
        if let Some(unknown) = fields.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
            return Err(ValidationError::new(
                "unknown_parameter",
                unknown.clone(),
                format!("Unrecognized request argument supplied: {unknown}"),
            ));
        }

        let input_file_id = required_string(&mut fields, "input_file_id")?;
        let chars = input_file_id.chars().count();
        if chars == 0 || chars > MAX_INPUT_FILE_ID_CHARS {
            return Err(ValidationError::invalid_value(
                "input_file_id",
                format!("Invalid 'input_file_id': expected 1 to {MAX_INPUT_FILE_ID_CHARS} characters, but got {chars}."),
            ));
        }

        let endpoint_text = required_string(&mut fields, "endpoint")?;
        let endpoint = Endpoint::parse(&endpoint_text).ok_or_else(|| {
            let supported: Vec<&str> = Endpoint::ALL.iter().map(|e| e.as_str()).collect();
            ValidationError::invalid_value(
                "endpoint",
                format!(
                    "Invalid endpoint: '{}'. Supported values are: {}.",
                    truncate(&endpoint_text),
                    supported.join(", ")
                ),
            )
        })?;

        let completion_window = required_string(&mut fields, "completion_window")?;
        if completion_window != "24h" {
            return Err(ValidationError::invalid_value(
                "completion_window",
                format!(
                    "Invalid completion_window: '{}'. Supported values are: 24h.",
                    truncate(&completion_window)
                ),
            ));
        }

        Ok(Self {
            input_file_id,
            endpoint,
            completion_window,
            metadata: optional(&mut fields, "metadata")
                .map(parse_metadata)
                .transpose()?,
            output_expires_after: optional(&mut fields, "output_expires_after")
                .map(parse_output_expires_after)
                .transpose()?,
            idempotency_key: optional(&mut fields, "idempotency_key")
                .map(|v| into_string(v, "idempotency_key"))
                .transpose()?,
            max_concurrency: optional(&mut fields, "max_concurrency")
                .map(parse_max_concurrency)
                .transpose()?,
        })
    }
}

fn parse_max_concurrency(value: Value) -> Result<u32, ValidationError> {
    const PARAM: &str = "max_concurrency";
    let Some(n) = value.as_i64() else {
        return Err(ValidationError::invalid_type(
            PARAM,
            "an integer",
            JsonKind::of(&value),
        ));
    };
    if !MAX_CONCURRENCY.contains(&n) {
        return Err(ValidationError::invalid_value(
            PARAM,
            format!(
                "Invalid 'max_concurrency': expected an integer from {} to {}, but got {n}.",
                MAX_CONCURRENCY.start(),
                MAX_CONCURRENCY.end()
            ),
        ));
    }
    Ok(u32::try_from(n).unwrap_or(1))
}

impl CreateBatch {
    /// The batch this request creates: `validating`, with the 24 h window set.
    pub fn new_batch(&self, id: &BatchId, created_at: i64) -> Batch {
        Batch {
            id: id.clone(),
            object: BatchObjectType::Batch,
            endpoint: self.endpoint.as_str().to_string(),
            errors: None,
            input_file_id: self.input_file_id.clone(),
            completion_window: self.completion_window.clone(),
            status: BatchStatus::Validating,
            output_file_id: None,
            error_file_id: None,
            created_at,
            in_progress_at: None,
            expires_at: Some(created_at + COMPLETION_WINDOW_SECS),
            finalizing_at: None,
            completed_at: None,
            failed_at: None,
            expired_at: None,
            cancelling_at: None,
            cancelled_at: None,
            request_counts: RequestCounts::default(),
            metadata: self.metadata.clone(),
            model: None,
            usage: None,
        }
    }
}

/// A present, non-null field; JSON `null` reads as absent, as in the OpenAI SDKs.
fn optional(fields: &mut Map<String, Value>, name: &str) -> Option<Value> {
    fields.remove(name).filter(|v| !v.is_null())
}

fn required_string(fields: &mut Map<String, Value>, name: &str) -> Result<String, ValidationError> {
    let value = fields
        .remove(name)
        .ok_or_else(|| ValidationError::missing(name))?;
    into_string(value, name)
}

fn into_string(value: Value, param: &str) -> Result<String, ValidationError> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(ValidationError::invalid_type(
            param,
            "a string",
            JsonKind::of(&other),
        )),
    }
}

fn parse_metadata(value: Value) -> Result<BTreeMap<String, String>, ValidationError> {
    let Value::Object(pairs) = value else {
        return Err(ValidationError::invalid_type(
            "metadata",
            "an object",
            JsonKind::of(&value),
        ));
    };
    if pairs.len() > MAX_METADATA_PAIRS {
        return Err(ValidationError::new(
            "object_above_max_properties",
            "metadata".to_string(),
            format!(
                "Invalid 'metadata': too many properties. Expected an object with at most {MAX_METADATA_PAIRS} properties, but got an object with {} properties instead.",
                pairs.len()
            ),
        ));
    }
    pairs
        .into_iter()
        .map(|(key, value)| {
            if key.chars().count() > MAX_METADATA_KEY_CHARS {
                return Err(ValidationError::new(
                    "string_above_max_length",
                    "metadata".to_string(),
                    format!(
                        "Invalid 'metadata': key '{}…' is longer than {MAX_METADATA_KEY_CHARS} characters.",
                        key.chars().take(MAX_METADATA_KEY_CHARS).collect::<String>()
                    ),
                ));
            }
            let param = format!("metadata.{key}");
            let value = into_string(value, &param)?;
            if value.chars().count() > MAX_METADATA_VALUE_CHARS {
                return Err(ValidationError::new(
                    "string_above_max_length",
                    param.clone(),
                    format!(
                        "Invalid '{param}': string too long. Expected a string with maximum length {MAX_METADATA_VALUE_CHARS}, but got a string with length {} instead.",
                        value.chars().count()
                    ),
                ));
            }
            Ok((key, value))
        })
        .collect()
}

fn parse_output_expires_after(value: Value) -> Result<OutputExpiresAfter, ValidationError> {
    const PARAM: &str = "output_expires_after";
    let Value::Object(mut fields) = value else {
        return Err(ValidationError::invalid_type(
            PARAM,
            "an object",
            JsonKind::of(&value),
        ));
    };
    if let Some(unknown) = fields.keys().find(|k| *k != "anchor" && *k != "seconds") {
        let param = format!("{PARAM}.{unknown}");
        return Err(ValidationError::new(
            "unknown_parameter",
            param.clone(),
            format!("Unrecognized request argument supplied: {param}"),
        ));
    }
    let anchor_param = format!("{PARAM}.anchor");
    let anchor = fields
        .remove("anchor")
        .ok_or_else(|| ValidationError::missing(&anchor_param))
        .and_then(|v| into_string(v, &anchor_param))?;
    if anchor != "created_at" {
        return Err(ValidationError::invalid_value(
            &anchor_param,
            format!(
                "Invalid '{anchor_param}': '{}'. Supported values are: created_at.",
                truncate(&anchor)
            ),
        ));
    }
    let seconds_param = format!("{PARAM}.seconds");
    let seconds = match fields.remove("seconds") {
        None => return Err(ValidationError::missing(&seconds_param)),
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or_default(),
        Some(other) => {
            return Err(ValidationError::invalid_type(
                &seconds_param,
                "an integer",
                JsonKind::of(&other),
            ))
        }
    };
    if !OUTPUT_EXPIRY_SECONDS.contains(&seconds) {
        return Err(ValidationError::invalid_value(
            &seconds_param,
            format!(
                "Invalid '{seconds_param}': expected an integer from {} to {}, but got {seconds}.",
                OUTPUT_EXPIRY_SECONDS.start(),
                OUTPUT_EXPIRY_SECONDS.end()
            ),
        ));
    }
    Ok(OutputExpiresAfter { anchor, seconds })
}

/// Echoes at most 100 characters of a bad value back to the client.
fn truncate(value: &str) -> String {
    const ECHO_CHARS: usize = 100;
    if value.chars().count() <= ECHO_CHARS {
        value.to_string()
    } else {
        format!("{}…", value.chars().take(ECHO_CHARS).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<CreateBatch, ValidationError> {
        CreateBatch::from_json(body.to_string().as_bytes())
    }

    fn valid() -> Value {
        json!({"input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut body = valid();
        body[field] = value;
        body
    }

    fn without(field: &str) -> Value {
        let mut body = valid();
        body.as_object_mut().unwrap().remove(field);
        body
    }

    #[test]
    fn a_minimal_request_is_accepted_for_every_endpoint() {
        for endpoint in Endpoint::ALL {
            let parsed = parse(with("endpoint", json!(endpoint.as_str()))).unwrap();
            assert_eq!(parsed.endpoint, endpoint);
            assert_eq!(parsed.metadata, None);
        }
    }

    #[test]
    fn every_rejection_names_its_field() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                without("input_file_id"),
                "input_file_id",
                "missing_required_parameter",
            ),
            (
                without("endpoint"),
                "endpoint",
                "missing_required_parameter",
            ),
            (
                without("completion_window"),
                "completion_window",
                "missing_required_parameter",
            ),
            (
                with("input_file_id", json!(7)),
                "input_file_id",
                "invalid_type",
            ),
            (
                with("input_file_id", json!("")),
                "input_file_id",
                "invalid_value",
            ),
            (
                with("input_file_id", json!("f".repeat(257))),
                "input_file_id",
                "invalid_value",
            ),
            (
                with("endpoint", json!("/v1/invalid/endpoint")),
                "endpoint",
                "invalid_value",
            ),
            (with("endpoint", json!("")), "endpoint", "invalid_value"),
            (
                with("completion_window", json!("48h")),
                "completion_window",
                "invalid_value",
            ),
            (
                with("completion_window", json!(null)),
                "completion_window",
                "invalid_type",
            ),
            (with("metadata", json!(["a"])), "metadata", "invalid_type"),
            (
                with("metadata", json!({"tags": ["t1", "t2"]})),
                "metadata.tags",
                "invalid_type",
            ),
            (
                with("metadata", json!({"n": 456})),
                "metadata.n",
                "invalid_type",
            ),
            (
                with("metadata", json!({"k": "v".repeat(513)})),
                "metadata.k",
                "string_above_max_length",
            ),
            (
                with("metadata", json!({"k".repeat(65): "v"})),
                "metadata",
                "string_above_max_length",
            ),
            (
                with(
                    "metadata",
                    Value::Object((0..17).map(|i| (i.to_string(), json!("v"))).collect()),
                ),
                "metadata",
                "object_above_max_properties",
            ),
            (
                with("output_expires_after", json!("soon")),
                "output_expires_after",
                "invalid_type",
            ),
            (
                with("output_expires_after", json!({"seconds": 3600})),
                "output_expires_after.anchor",
                "missing_required_parameter",
            ),
            (
                with(
                    "output_expires_after",
                    json!({"anchor": "now", "seconds": 3600}),
                ),
                "output_expires_after.anchor",
                "invalid_value",
            ),
            (
                with("output_expires_after", json!({"anchor": "created_at"})),
                "output_expires_after.seconds",
                "missing_required_parameter",
            ),
            (
                with(
                    "output_expires_after",
                    json!({"anchor": "created_at", "seconds": 1.5}),
                ),
                "output_expires_after.seconds",
                "invalid_type",
            ),
            (
                with(
                    "output_expires_after",
                    json!({"anchor": "created_at", "seconds": 3599}),
                ),
                "output_expires_after.seconds",
                "invalid_value",
            ),
            (
                with(
                    "output_expires_after",
                    json!({"anchor": "created_at", "seconds": 2_592_001}),
                ),
                "output_expires_after.seconds",
                "invalid_value",
            ),
            (
                with(
                    "output_expires_after",
                    json!({"anchor": "created_at", "seconds": 3600, "x": 1}),
                ),
                "output_expires_after.x",
                "unknown_parameter",
            ),
            (
                with("idempotency_key", json!(5)),
                "idempotency_key",
                "invalid_type",
            ),
            (with("surprise", json!(1)), "surprise", "unknown_parameter"),
            (
                with("max_concurrency", json!(0)),
                "max_concurrency",
                "invalid_value",
            ),
            (
                with("max_concurrency", json!(1025)),
                "max_concurrency",
                "invalid_value",
            ),
            (
                with("max_concurrency", json!("8")),
                "max_concurrency",
                "invalid_type",
            ),
        ];
        for (body, param, code) in cases {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param), "{body}");
            assert_eq!(err.code, code, "{body}");
        }
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_rejected_without_a_param() {
        for body in [&b"{not json"[..], b"[]", b"\"str\"", b"", b"\xff\xfe"] {
            let err = CreateBatch::from_json(body).unwrap_err();
            assert_eq!(err.param, None);
        }
    }

    #[test]
    fn boundary_values_are_accepted() {
        let sixteen: Map<String, Value> = (0..16)
            .map(|i| (format!("{i:0>64}"), json!("v".repeat(512))))
            .collect();
        let body = json!({
            "input_file_id": "file-1", "endpoint": "/v1/embeddings", "completion_window": "24h",
            "metadata": sixteen,
            "output_expires_after": {"anchor": "created_at", "seconds": 2_592_000},
            "idempotency_key": "k",
        });
        let parsed = parse(body).unwrap();
        assert_eq!(parsed.metadata.unwrap().len(), 16);
        assert_eq!(parsed.output_expires_after.unwrap().seconds, 2_592_000);
        assert_eq!(parsed.idempotency_key.as_deref(), Some("k"));
    }

    #[test]
    fn null_optional_fields_read_as_absent() {
        let mut body = valid();
        body["metadata"] = Value::Null;
        body["idempotency_key"] = Value::Null;
        body["output_expires_after"] = Value::Null;
        let parsed = parse(body).unwrap();
        assert_eq!(
            (
                parsed.metadata,
                parsed.idempotency_key,
                parsed.output_expires_after
            ),
            (None, None, None)
        );
    }

    #[test]
    fn long_bad_values_are_not_echoed_whole() {
        let err = parse(with("endpoint", json!("x".repeat(10_000)))).unwrap_err();
        assert!(err.message.len() < 400, "{}", err.message);
    }
}
