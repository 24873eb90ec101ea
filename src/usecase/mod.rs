//! The use cases between the API's handlers and the ports: each decides what
//! a request means for the stores and the queue, so a handler only parses,
//! calls one use case and renders its answer.

pub mod batches;
pub mod files;
pub mod ingest;
pub mod uploads;
