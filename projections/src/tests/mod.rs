//! The crate's tests, against the in-memory event store (or PostgreSQL's) and a fresh
//! read database per test: a SQLite file, and a PostgreSQL schema for the tests that
//! run on both engines (`…::sqlite`, `…::postgres`).

mod engines;
mod lease;
mod read_models;
mod rebuild;
mod runtime;
mod support;
