//! lambda-batches: an OpenAI-compatible Batch API.
//!
//! Data flows one way: a request enters [`api`], becomes a [`domain`] value, goes
//! through a [`store`] port and comes back as a domain value that `api` renders.
//! [`app`] is the composition root shared by the Lambda and local entrypoints.

pub mod admin;
pub mod api;
pub mod app;
pub mod clock;
pub mod config;
pub mod domain;
pub mod fault;
pub mod files;
pub mod queue;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod usecase;
pub mod worker;
