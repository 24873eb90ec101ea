//! A fake OpenAI-compatible upstream, for the test suites and the benchmarks.
//!
//! It answers `GET /v1/models` and `POST /v1/{chat/completions, completions,
//! embeddings, responses, moderations}` with deterministic OpenAI-shaped bodies,
//! and fails on purpose: a seeded fraction of the requests gets a `429`, a
//! `500`/`503` or a dropped connection; the first N attempts of each distinct
//! body get a `500`; and a body can ask for its own failure with a top-level
//! `"fail_with": 400` (any status from 400 to 599) or `"fail_with": "drop"`.
//!
//! Two ways to use it:
//!
//! - as a process: `cargo run --example fake_upstream -- --port 0 --rate-429 0.1`
//!   prints one line, `listening on http://127.0.0.1:PORT/v1`, and serves until
//!   SIGTERM or Ctrl-C (`--help` lists the flags);
//! - in-process, from an integration test:
//!   `#[path = "../examples/fake_upstream.rs"] mod fake_upstream;` and then
//!   `fake_upstream::start(FakeConfig::default()).await`.
//!
//! An inference request goes through these steps, in order, and the first that
//! answers wins:
//!
//! 1. bookkeeping: one draw of the seeded RNG, one more attempt for the body's
//!    fingerprint, then the configured latency;
//! 2. `fail_first`: attempts 1..=N of the same endpoint and body answer `500`;
//! 3. the RNG draw: `429`, `500`/`503` or a dropped connection, at the configured rates;
//! 4. the body: malformed JSON is a `400`, `fail_with` is obeyed, a missing model is
//!    a `400` and an unknown one a `404` (`model_not_found`);
//! 5. the answer, a function of the endpoint and the body alone.
//!
//! The transient failures (2, 3) come first because a real upstream sheds load
//! before it reads the request. The model list is exempt from latency and
//! faults: validation asks it once per batch, and a test of execution retries
//! should not have to survive a flaky validation step first.

// Test crates include this file with `#[path]` and each uses a different part of
// it; the binary does not use the inspection helpers either.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How the fake behaves. `FakeConfig::default()` always succeeds, at once.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// The models `GET /models` lists and the inference endpoints accept.
    pub models: Vec<String>,
    /// Added to every inference request.
    pub latency: Duration,
    /// A further delay, uniform in `[0, latency_jitter)`, drawn per request.
    pub latency_jitter: Duration,
    /// Fraction of inference requests answered `429` with `retry-after`.
    pub rate_429: f64,
    /// Fraction answered `500` or `503` (about half each).
    pub rate_500: f64,
    /// Fraction whose TCP connection is closed without any HTTP response.
    pub rate_drop: f64,
    /// Sent with every `429` as `retry-after` (whole seconds, rounded up) and
    /// `retry-after-ms`, the header the OpenAI SDKs prefer.
    pub retry_after: Duration,
    /// Seeds the RNG behind the rates and the jitter: same seed, same requests
    /// in the same order, same answers.
    pub seed: u64,
    /// The first `fail_first` attempts of each distinct body on each endpoint
    /// answer `500`; later attempts go on as usual.
    pub fail_first: u32,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            models: vec!["fake-model".to_owned(), "fake-embed".to_owned()],
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            rate_429: 0.0,
            rate_500: 0.0,
            rate_drop: 0.0,
            retry_after: Duration::ZERO,
            seed: 0,
            fail_first: 0,
        }
    }
}

impl FakeConfig {
    /// The rates are fractions that share one draw, so together they must fit in 1.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("rate_429", self.rate_429),
            ("rate_500", self.rate_500),
            ("rate_drop", self.rate_drop),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be within 0 and 1, not {rate}"));
            }
        }
        if self.rate_429 + self.rate_500 + self.rate_drop > 1.0 {
            return Err("rate_429 + rate_500 + rate_drop must not exceed 1".to_owned());
        }
        if self.models.is_empty() {
            return Err("at least one model is needed".to_owned());
        }
        Ok(())
    }
}

/// What the fake has seen since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FakeStats {
    /// Every request, whatever its path and fate.
    pub requests: u64,
    /// Requests per path, e.g. `"/v1/chat/completions"`.
    pub by_endpoint: BTreeMap<String, u64>,
    /// Answers per HTTP status; dropped connections have none and are not here.
    pub by_status: BTreeMap<u16, u64>,
    /// Connections closed without an answer, by `rate_drop` or `"fail_with": "drop"`.
    pub dropped: u64,
    /// Requests being handled when the snapshot was taken.
    pub in_flight: u64,
    /// The most requests ever handled at once.
    pub max_in_flight: u64,
    /// Inference attempts per request [`fingerprint`].
    pub attempts: HashMap<String, u32>,
}

impl FakeStats {
    pub fn status(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    pub fn endpoint(&self, path: &str) -> u64 {
        self.by_endpoint.get(path).copied().unwrap_or(0)
    }

    /// How many times this exact body was sent to `path` (e.g. `"/v1/embeddings"`).
    pub fn attempts_of(&self, path: &str, body: &[u8]) -> u32 {
        self.attempts
            .get(&fingerprint(path, body))
            .copied()
            .unwrap_or(0)
    }
}

/// The identity of an inference request: its path and exact body bytes (FNV-1a,
/// 64 bits, in hex). A client retry resends the same bytes, so it counts as
/// another attempt of the same request; two batch lines with identical bodies
/// are, to the fake, the same request too.
pub fn fingerprint(path: &str, body: &[u8]) -> String {
    let mut hash = Fnv1a::new();
    hash.write(path.as_bytes());
    hash.write(&[0]);
    hash.write(body);
    format!("{:016x}", hash.finish())
}

/// A running fake. Dropping it stops the server, as does [`FakeHandle::shutdown`].
pub struct FakeHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    server: Option<JoinHandle<()>>,
}

impl FakeHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL an OpenAI client is given, e.g. `http://127.0.0.1:41234/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn stats(&self) -> FakeStats {
        let mut stats = self.shared.lock().stats.clone();
        stats.in_flight = self.shared.in_flight.load(Ordering::Relaxed);
        stats.max_in_flight = self.shared.max_in_flight.load(Ordering::Relaxed);
        stats
    }

    /// Stops accepting, closes every connection and waits until both are done.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for FakeHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves the fake on `listener`, in the background, until the handle goes.
pub async fn serve(listener: TcpListener, config: FakeConfig) -> FakeHandle {
    let addr = listener
        .local_addr()
        .expect("a bound listener has a local address");
    let shared = Arc::new(Shared::new(config));
    let stop = CancellationToken::new();
    let server = tokio::spawn(accept_loop(listener, router(shared.clone()), stop.clone()));
    FakeHandle {
        addr,
        shared,
        stop,
        server: Some(server),
    }
}

/// Serves the fake on a fresh loopback port.
pub async fn start(config: FakeConfig) -> FakeHandle {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind a loopback port");
    serve(listener, config).await
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

/// Closes the connection a request arrived on. axum has no way to drop a
/// connection without answering, so each connection is served by hand and
/// watches this: dropping hyper's connection future closes the socket.
#[derive(Clone)]
struct ConnectionKill(Arc<Notify>);

async fn accept_loop(listener: TcpListener, app: Router, stop: CancellationToken) {
    // Owning the connection tasks means that leaving this loop aborts them all.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, _)) => {
                connections.spawn(serve_connection(stream, app.clone()));
            }
            // Out of file descriptors, most likely: let some connections finish.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, app: Router) {
    // Small answers on a keep-alive connection otherwise wait for Nagle.
    let _ = stream.set_nodelay(true);
    let kill = ConnectionKill(Arc::new(Notify::new()));
    let service = {
        let kill = kill.clone();
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(kill.clone());
            app.clone().oneshot(request)
        })
    };
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        () = kill.0.notified() => {}
    }
}

// ---------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------

struct Shared {
    config: FakeConfig,
    inner: Mutex<Inner>,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

struct Inner {
    faults: SplitMix64,
    // Its own stream, so that turning jitter on does not change which requests fail.
    jitter: SplitMix64,
    stats: FakeStats,
    next_request_id: u64,
}

/// What the bookkeeping decided for one inference request.
struct Arrival {
    fingerprint: String,
    attempt: u32,
    fault: Fault,
    delay: Duration,
}

impl Shared {
    fn new(config: FakeConfig) -> Self {
        let inner = Inner {
            faults: SplitMix64::new(config.seed),
            jitter: SplitMix64::new(config.seed ^ 0x6a09_e667_f3bc_c908),
            stats: FakeStats::default(),
            next_request_id: 1,
        };
        Self {
            config,
            inner: Mutex::new(inner),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
        }
    }

    // A panicking handler must not take the stats down with it.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a request in and returns its request id.
    fn begin(&self, path: &str) -> u64 {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        let mut inner = self.lock();
        inner.stats.requests += 1;
        match inner.stats.by_endpoint.get_mut(path) {
            Some(count) => *count += 1,
            None => {
                inner.stats.by_endpoint.insert(path.to_owned(), 1);
            }
        }
        let id = inner.next_request_id;
        inner.next_request_id += 1;
        id
    }

    /// Counts a request out, with the status of its answer if it got one.
    fn end(&self, status: Option<StatusCode>) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(status) = status {
            *self
                .lock()
                .stats
                .by_status
                .entry(status.as_u16())
                .or_insert(0) += 1;
        }
    }

    fn arrive(&self, path: &str, body: &[u8]) -> Arrival {
        let fingerprint = fingerprint(path, body);
        let config = &self.config;
        let mut inner = self.lock();
        // Drawn for every request, even one that fails for another reason, so the
        // n-th request's fate depends on the seed and n alone.
        let fault = Fault::draw(&mut inner.faults, config);
        let jitter_nanos = config.latency_jitter.as_nanos() as u64;
        let jitter = match jitter_nanos {
            0 => Duration::ZERO,
            n => Duration::from_nanos(inner.jitter.next_u64() % n),
        };
        let attempt = match inner.stats.attempts.get_mut(&fingerprint) {
            Some(attempts) => {
                *attempts += 1;
                *attempts
            }
            None => {
                inner.stats.attempts.insert(fingerprint.clone(), 1);
                1
            }
        };
        Arrival {
            fingerprint,
            attempt,
            fault,
            delay: config.latency + jitter,
        }
    }
}

/// A transient failure drawn from the seeded RNG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    RateLimited,
    ServerError(u16),
    Drop,
}

impl Fault {
    /// One draw decides: `[0, rate_429)` is a 429, the next `rate_500` a 500 or a
    /// 503 (by the draw's lowest bit), the next `rate_drop` a dropped connection.
    pub fn draw(rng: &mut SplitMix64, config: &FakeConfig) -> Self {
        let bits = rng.next_u64();
        let u = unit_interval(bits);
        if u < config.rate_429 {
            Self::RateLimited
        } else if u < config.rate_429 + config.rate_500 {
            Self::ServerError(if bits & 1 == 0 { 500 } else { 503 })
        } else if u < config.rate_429 + config.rate_500 + config.rate_drop {
            Self::Drop
        } else {
            Self::None
        }
    }
}

/// Steele, Lea and Flood's SplitMix64: tiny, fast and good enough to pick faults.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The top 53 bits as a float in `[0, 1)`.
fn unit_interval(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

/// Large embedding or chat batches exceed axum's 2 MB default.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(infer))
        .route("/v1/completions", post(infer))
        .route("/v1/embeddings", post(infer))
        .route("/v1/responses", post(infer))
        .route("/v1/moderations", post(infer))
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(shared.clone(), track))
        .with_state(shared)
}

/// Counts every request and stamps its `x-request-id`.
async fn track(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    /// Counts the request out even when its connection is dropped mid-way,
    /// by the fake or by the client, which drops this future instead of finishing it.
    struct Finish<'a> {
        shared: &'a Shared,
        status: Option<StatusCode>,
    }
    impl Drop for Finish<'_> {
        fn drop(&mut self) {
            self.shared.end(self.status);
        }
    }

    let id = shared.begin(request.uri().path());
    let mut finish = Finish {
        shared: &shared,
        status: None,
    };
    let mut response = next.run(request).await;
    finish.status = Some(response.status());
    let id = HeaderValue::from_str(&format!("req_fake_{id:012x}"))
        .expect("hex digits are a valid header value");
    response.headers_mut().insert("x-request-id", id);
    response
}

async fn list_models(State(shared): State<Arc<Shared>>) -> Response {
    let data: Vec<Value> = shared
        .config
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "fake"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn unknown_route(uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("Invalid URL (unknown path {})", uri.path()),
        None,
        None,
    )
}

async fn infer(
    State(shared): State<Arc<Shared>>,
    Extension(kill): Extension<ConnectionKill>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let config = &shared.config;
    let path = uri.path();
    let arrival = shared.arrive(path, &body);
    if !arrival.delay.is_zero() {
        tokio::time::sleep(arrival.delay).await;
    }

    if arrival.attempt <= config.fail_first {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            format!(
                "fake upstream: attempt {} of this request fails (fail_first = {})",
                arrival.attempt, config.fail_first
            ),
            None,
            None,
        );
    }
    match arrival.fault {
        Fault::None => {}
        Fault::RateLimited => return rate_limited(config, None),
        Fault::ServerError(status) => return server_error(status),
        Fault::Drop => return drop_connection(&shared, &kill).await,
    }

    let request = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(request)) => request,
        Ok(_) => {
            return invalid_request("The request body must be a JSON object.", None);
        }
        Err(cause) => {
            return invalid_request(
                format!(
                    "We could not parse the JSON body of your request. ({cause}) \
                     The OpenAI API expects a JSON payload."
                ),
                None,
            );
        }
    };

    if let Some(directive) = request.get("fail_with") {
        return obey_fail_with(&shared, directive, &kill).await;
    }

    let endpoint = Endpoint::from_path(path).expect("only inference paths are routed here");
    let model = match request.get("model") {
        Some(Value::String(model)) => model.as_str(),
        // Moderations may leave the model out; OpenAI then picks its default.
        None if endpoint == Endpoint::Moderations => config.models[0].as_str(),
        _ => {
            return invalid_request("you must provide a model parameter", Some("model"));
        }
    };
    if !config.models.iter().any(|known| known == model) {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{model}` does not exist or you do not have access to it."),
            None,
            Some("model_not_found"),
        );
    }

    let answer = match endpoint {
        Endpoint::ChatCompletions => chat_completion(&request, model, &arrival.fingerprint),
        Endpoint::Completions => completion(&request, model, &arrival.fingerprint),
        Endpoint::Embeddings => embeddings(&request, model),
        Endpoint::Responses => response(&request, model, &arrival.fingerprint),
        Endpoint::Moderations => moderation(&request, model, &arrival.fingerprint),
    };
    match answer {
        Ok(body) => Json(body).into_response(),
        Err(missing) => invalid_request(
            format!("Missing required parameter: '{missing}'."),
            Some(missing),
        ),
    }
}

async fn obey_fail_with(shared: &Shared, directive: &Value, kill: &ConnectionKill) -> Response {
    let status = match directive {
        Value::String(word) if word == "drop" => return drop_connection(shared, kill).await,
        Value::String(number) => number.parse::<u16>().ok(),
        Value::Number(number) => number.as_u64().and_then(|n| u16::try_from(n).ok()),
        _ => None,
    };
    match status {
        Some(429) => rate_limited(&shared.config, Some("fail_with")),
        Some(status @ 500..=599) => server_error(status),
        Some(status @ 400..=499) => error(
            StatusCode::from_u16(status).expect("400..=499 are valid statuses"),
            "invalid_request_error",
            format!("fake upstream: failing with {status} as the request asks"),
            None,
            Some("fail_with"),
        ),
        _ => invalid_request(
            "fail_with must be an error status (400 to 599) or \"drop\"",
            Some("fail_with"),
        ),
    }
}

/// Closes the connection without an answer; the future never completes, and is
/// dropped along with the connection.
async fn drop_connection(shared: &Shared, kill: &ConnectionKill) -> Response {
    // Counted before the socket closes, so a client that sees the close sees the count.
    shared.lock().stats.dropped += 1;
    kill.0.notify_one();
    std::future::pending().await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Moderations,
}

impl Endpoint {
    fn from_path(path: &str) -> Option<Self> {
        Some(match path {
            "/v1/chat/completions" => Self::ChatCompletions,
            "/v1/completions" => Self::Completions,
            "/v1/embeddings" => Self::Embeddings,
            "/v1/responses" => Self::Responses,
            "/v1/moderations" => Self::Moderations,
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------
// Errors, in the OpenAI envelope
// ---------------------------------------------------------------------------

fn error(
    status: StatusCode,
    kind: &str,
    message: impl Into<String>,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    let body = json!({"error": {
        "message": message.into(),
        "type": kind,
        "param": param,
        "code": code,
    }});
    (status, Json(body)).into_response()
}

fn invalid_request(message: impl Into<String>, param: Option<&str>) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
        param,
        None,
    )
}

fn rate_limited(config: &FakeConfig, code: Option<&str>) -> Response {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "requests",
        "Rate limit reached for requests (fake upstream).",
        None,
        Some(code.unwrap_or("rate_limit_exceeded")),
    );
    let millis = config.retry_after.as_millis();
    let headers = response.headers_mut();
    headers.insert(
        "retry-after",
        HeaderValue::from(millis.div_ceil(1000) as u64),
    );
    headers.insert("retry-after-ms", HeaderValue::from(millis as u64));
    response
}

fn server_error(status: u16) -> Response {
    let (status, message) = match status {
        503 => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The engine is currently overloaded, please try again later.",
        ),
        other => (
            StatusCode::from_u16(other).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "The server had an error while processing your request. Sorry about that!",
        ),
    };
    error(status, "server_error", message, None, None)
}

// ---------------------------------------------------------------------------
// Answers: functions of the request alone
// ---------------------------------------------------------------------------

/// A body parameter the endpoint needs and the request lacks.
type Missing = &'static str;

/// Roughly four bytes a token, at least one: deterministic, and proportional to
/// the input as real tokenizers are.
fn tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4).max(1)
}

/// The text of a message `content`: a string, or the `text` of its parts.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The last message from the user, or the last message when there is none.
fn last_user_text(messages: &[Value]) -> String {
    let last = messages
        .iter()
        .rev()
        .find(|message| message.get("role").and_then(Value::as_str) == Some("user"))
        .or(messages.last());
    last.map(|message| text_of(message.get("content")))
        .unwrap_or_default()
}

/// `n` as the request asks, within reason.
fn choice_count(request: &Map<String, Value>) -> u64 {
    request
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 128)
}

fn chat_completion(
    request: &Map<String, Value>,
    model: &str,
    fingerprint: &str,
) -> Result<Value, Missing> {
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages")?;
    let prompt_bytes: usize = messages
        .iter()
        .map(|message| text_of(message.get("content")).len())
        .sum();
    let content = format!("echo: {}", last_user_text(messages));
    let n = choice_count(request);
    let choices: Vec<Value> = (0..n)
        .map(|index| {
            json!({
                "index": index,
                "message": {"role": "assistant", "content": content, "refusal": null},
                "logprobs": null,
                "finish_reason": "stop",
            })
        })
        .collect();
    let prompt_tokens = tokens(prompt_bytes);
    let completion_tokens = tokens(content.len()) * n;
    Ok(json!({
        "id": format!("chatcmpl-{fingerprint}"),
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }))
}

/// One prompt or embedding input: its text, and its size in tokens.
struct Input {
    text: String,
    tokens: u64,
}

/// A `prompt` or `input`: a string, an array of strings, an array of token ids,
/// or an array of arrays of token ids.
fn inputs(value: Option<&Value>) -> Option<Vec<Input>> {
    fn token_ids(ids: &[Value]) -> Input {
        Input {
            text: format!("[{} tokens]", ids.len()),
            tokens: ids.len() as u64,
        }
    }
    fn one(value: &Value) -> Option<Input> {
        match value {
            Value::String(text) => Some(Input {
                text: text.clone(),
                tokens: tokens(text.len()),
            }),
            Value::Array(ids) => Some(token_ids(ids)),
            _ => None,
        }
    }
    match value? {
        Value::Array(items) if items.iter().all(Value::is_number) => Some(vec![token_ids(items)]),
        Value::Array(items) => items.iter().map(one).collect(),
        single => Some(vec![one(single)?]),
    }
}

fn completion(
    request: &Map<String, Value>,
    model: &str,
    fingerprint: &str,
) -> Result<Value, Missing> {
    let prompts = inputs(request.get("prompt")).ok_or("prompt")?;
    let n = choice_count(request);
    let mut choices = Vec::with_capacity(prompts.len() * n as usize);
    let mut completion_tokens = 0;
    for prompt in &prompts {
        let text = format!("echo: {}", prompt.text);
        for _ in 0..n {
            completion_tokens += tokens(text.len());
            choices.push(json!({
                "index": choices.len(),
                "text": text,
                "logprobs": null,
                "finish_reason": "stop",
            }));
        }
    }
    let prompt_tokens: u64 = prompts.iter().map(|prompt| prompt.tokens).sum();
    Ok(json!({
        "id": format!("cmpl-{fingerprint}"),
        "object": "text_completion",
        "created": 0,
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }))
}

/// Small, to keep the benchmarks about the batch service and not about JSON.
pub const DEFAULT_EMBEDDING_DIMENSIONS: usize = 8;

fn embeddings(request: &Map<String, Value>, model: &str) -> Result<Value, Missing> {
    let inputs = inputs(request.get("input")).ok_or("input")?;
    let dimensions = request
        .get("dimensions")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_EMBEDDING_DIMENSIONS, |d| d.clamp(1, 4096) as usize);
    // The OpenAI SDKs ask for base64 unless told otherwise.
    let base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = embedding(&input.text, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64_encode(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let prompt_tokens: u64 = inputs.iter().map(|input| input.tokens).sum();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
}

/// A unit vector that depends on the text alone.
pub fn embedding(text: &str, dimensions: usize) -> Vec<f32> {
    let mut hash = Fnv1a::new();
    hash.write(text.as_bytes());
    let mut rng = SplitMix64::new(hash.finish());
    let raw: Vec<f64> = (0..dimensions)
        .map(|_| unit_interval(rng.next_u64()) * 2.0 - 1.0)
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    raw.iter().map(|x| (x / norm) as f32).collect()
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn response(
    request: &Map<String, Value>,
    model: &str,
    fingerprint: &str,
) -> Result<Value, Missing> {
    let (input_bytes, last) = match request.get("input").ok_or("input")? {
        Value::String(text) => (text.len(), text.clone()),
        Value::Array(items) => {
            let bytes = items
                .iter()
                .map(|item| text_of(item.get("content")).len())
                .sum();
            (bytes, last_user_text(items))
        }
        _ => return Err("input"),
    };
    let instructions = request
        .get("instructions")
        .and_then(Value::as_str)
        .map_or(0, str::len);
    let text = format!("echo: {last}");
    let input_tokens = tokens(input_bytes + instructions);
    let output_tokens = tokens(text.len());
    Ok(json!({
        "id": format!("resp_{fingerprint}"),
        "object": "response",
        "created_at": 0,
        "status": "completed",
        "error": null,
        "incomplete_details": null,
        "model": model,
        "output": [{
            "type": "message",
            "id": format!("msg_{fingerprint}"),
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }],
        "parallel_tool_calls": true,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
    }))
}

/// Any input containing this is flagged for violence, so tests can see a flag.
pub const FLAG_MARKER: &str = "flag-me";

const MODERATION_CATEGORIES: [&str; 11] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

fn moderation(
    request: &Map<String, Value>,
    model: &str,
    fingerprint: &str,
) -> Result<Value, Missing> {
    let texts: Vec<String> = match request.get("input").ok_or("input")? {
        Value::String(text) => vec![text.clone()],
        // Multi-modal parts are one input; an array of strings is one input each.
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
        parts @ Value::Array(_) => vec![text_of(Some(parts))],
        _ => return Err("input"),
    };
    let results: Vec<Value> = texts
        .iter()
        .map(|text| {
            let flagged = text.contains(FLAG_MARKER);
            let mut categories = Map::new();
            let mut scores = Map::new();
            for category in MODERATION_CATEGORIES {
                let hit = flagged && category == "violence";
                categories.insert(category.to_owned(), Value::Bool(hit));
                scores.insert(category.to_owned(), json!(if hit { 0.99 } else { 0.0001 }));
            }
            json!({"flagged": flagged, "categories": categories, "category_scores": scores})
        })
        .collect();
    Ok(json!({"id": format!("modr-{fingerprint}"), "model": model, "results": results}))
}

// ---------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------

pub const USAGE: &str = "\
usage: fake_upstream [options]
  --host ADDR            address to bind (default 127.0.0.1)
  --port PORT            port to bind, 0 for any free one (default 0)
  --latency-ms MS        delay added to every inference request (default 0)
  --jitter-ms MS         further random delay in [0, MS) (default 0)
  --rate-429 F           fraction answered 429 (default 0)
  --rate-500 F           fraction answered 500 or 503 (default 0)
  --rate-drop F          fraction whose connection is dropped (default 0)
  --retry-after-ms MS    retry-after sent with every 429 (default 0)
  --seed N               seed of the fault and jitter RNG (default 0)
  --fail-first N         first N attempts of each distinct body answer 500 (default 0)
  --models A,B           models served (default fake-model,fake-embed)
Prints `listening on http://HOST:PORT/v1` once ready; serves until SIGTERM or Ctrl-C.";

/// What the command line asks for.
#[derive(Clone, Debug)]
pub struct Cli {
    pub host: IpAddr,
    pub port: u16,
    pub config: FakeConfig,
}

/// Parses the flags (without the program name); `Ok(None)` asks for the usage.
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<Option<Cli>, String> {
    fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
        value
            .parse()
            .map_err(|_| format!("{flag}: not a valid number: {value:?}"))
    }

    let mut cli = Cli {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        config: FakeConfig::default(),
    };
    let config = &mut cli.config;
    let mut args = args.iter().map(AsRef::as_ref);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value)),
            None => (arg, None),
        };
        let value = match inline {
            Some(value) => value,
            None => args.next().ok_or_else(|| format!("{flag} needs a value"))?,
        };
        match flag {
            "--host" => cli.host = number(flag, value)?,
            "--port" => cli.port = number(flag, value)?,
            "--latency-ms" => config.latency = Duration::from_millis(number(flag, value)?),
            "--jitter-ms" => config.latency_jitter = Duration::from_millis(number(flag, value)?),
            "--rate-429" => config.rate_429 = number(flag, value)?,
            "--rate-500" => config.rate_500 = number(flag, value)?,
            "--rate-drop" => config.rate_drop = number(flag, value)?,
            "--retry-after-ms" => config.retry_after = Duration::from_millis(number(flag, value)?),
            "--seed" => config.seed = number(flag, value)?,
            "--fail-first" => config.fail_first = number(flag, value)?,
            "--models" => {
                config.models = value
                    .split(',')
                    .map(str::trim)
                    .filter(|model| !model.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    cli.config.validate()?;
    Ok(Some(cli))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cli = match parse_args(&args) {
        Ok(Some(cli)) => cli,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(message) => {
            eprintln!("fake_upstream: {message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the tokio runtime");
    runtime.block_on(async {
        let listener = match TcpListener::bind(SocketAddr::new(cli.host, cli.port)).await {
            Ok(listener) => listener,
            Err(cause) => {
                eprintln!(
                    "fake_upstream: cannot bind {}:{}: {cause}",
                    cli.host, cli.port
                );
                std::process::exit(1);
            }
        };
        let fake = serve(listener, cli.config).await;
        // The one line a harness waits for, to learn the port.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening on {}", fake.base_url());
        let _ = stdout.flush();
        drop(stdout);
        until_terminated().await;
        fake.shutdown().await;
    });
}

async fn until_terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate()).expect("install a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
