//! The crate's tests, against the in-memory event store and a fresh read database file
//! per test.

mod read_models;
mod rebuild;
mod runtime;
mod support;
