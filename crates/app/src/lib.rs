//! Homeroom's application layer: the command service.
//!
//! - [`service::CommandService`] takes a decoded command and its [`CommandContext`]
//!   (district, actor, command id, time), brings the target stream and every fact the
//!   rule needs up to date through the version-checked [`cache::StateCache`], lets the
//!   domain decide, and appends with the expected version, retrying a bounded number of
//!   times on conflict. A command id seen before answers with its first result.
//! - [`codec`] turns domain events into stored events and back, upcasting old shapes.
//! - [`queries::QueryService`] answers every read of the API from the read models,
//!   authorised by the domain's visibility rules on facts from the event streams.
//! - [`preview::PreviewService`] renders a personal message before it is sent (the
//!   character counter), asking a [`preview::PhoneBook`] whether the phone is shared;
//!   [`live::LiveHub`] follows the log once per process for `GET /v1/stream`.
//! - [`verification::verify`] checks the log for tampering: the hash chains, and the
//!   log against the audit trail.
//! - [`CommandError`] keeps a rule's refusal apart from a store failure.

pub mod cache;
pub mod codec;
pub mod commands;
mod error;
pub mod live;
pub mod preview;
pub mod queries;
pub mod service;
pub mod turns;
pub mod verification;

pub use commands::{parse_command, CommandParseError, API_COMMANDS};
pub use error::CommandError;
/// The shapes reads answer with (API.md's field names), as the read models build them.
pub use homeroom_projections::queries as views;
pub use queries::{QueryError, QueryService, Reader};
pub use service::{CommandContext, CommandMetrics, CommandOutcome, CommandService, RecordedRef};
