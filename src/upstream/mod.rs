//! The OpenAI-compatible upstream that executes request lines.
//!
//! One `reqwest::Client` per process, built at init: it keeps connections alive
//! across every request of every batch.
//!
//! - [`UpstreamClient::execute`] runs one request line, with the retries of a
//!   [`RetryPolicy`], and says how it ended ([`Outcome`]);
//! - [`output_line`] / [`OutputLine`] turn that into a line of the output or error file;
//! - [`usage_of`] reads an answer's token usage for the batch's `usage`.

mod execute;
mod output;
mod retry;
mod usage;

pub use execute::{transport_code, Execution, Outcome};
pub use output::{output_line, OutputError, OutputLine, OutputResponse};
pub use retry::RetryPolicy;
pub use usage::usage_of;

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream request failed")]
    Transport(#[from] reqwest::Error),
    #[error("upstream answered {status}")]
    Status { status: u16 },
}

#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Base URL including `/v1`, as the OpenAI SDKs take it.
    pub base_url: String,
    pub api_key: Option<String>,
}

// Never print the upstream key.
impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct UpstreamClient {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
}

impl UpstreamClient {
    pub fn new(config: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let http = reqwest::Client::builder()
            // The upstream is the operator's; a redirect from it to anywhere
            // else (an internal address, say) is not followed.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            http,
            base_url: config.base_url.clone(),
            api_key: config.api_key.clone(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.authorize(
            self.http
                .request(method, format!("{}{path}", self.base_url)),
        )
    }

    fn authorize(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// The ids of `GET /models`, asked once per batch during validation.
    pub async fn model_ids(&self) -> Result<HashSet<String>, UpstreamError> {
        #[derive(Deserialize)]
        struct Model {
            id: String,
        }
        #[derive(Deserialize)]
        struct Models {
            data: Vec<Model>,
        }
        let response = self
            .request(reqwest::Method::GET, "/models")
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(UpstreamError::Status {
                status: response.status().as_u16(),
            });
        }
        let models: Models = response.json().await?;
        Ok(models.data.into_iter().map(|m| m.id).collect())
    }
}
