//! Bulk role assignment from a CSV file: `POST /v1/imports/role-assignments` and the
//! `homeroom import roles` subcommand share this code.
//!
//! The file has the header `person_id,role_id,school_id` (any order, each column once;
//! `school_id` may be empty for a district-wide role, but every row has every column the
//! header names, so a line cut short never turns into a district-wide grant). Each row
//! becomes one `AssignRole` command through the command service with the caller's
//! identity: its own atomic append, so a bad row never stops the good ones and never
//! half-applies. With an idempotency key, row `n`'s command id is UUID v5 of (key,
//! `n`), so sending the same file again with the same key records nothing twice.

use crate::auth::Caller;
use crate::commands::{body_bytes, idempotency_key, parse};
use crate::metrics::Metrics;
use crate::problem::ApiError;
use crate::state::ApiState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use futures::StreamExt;
use homeroom_app::{CommandContext, CommandService};
use homeroom_domain::Command;
use schemars::JsonSchema;
use serde::Serialize;
use std::time::Duration;
use uuid::Uuid;

/// The columns of a role-assignment file.
pub const COLUMNS: [&str; 3] = ["person_id", "role_id", "school_id"];
/// Rows decided at once; the store groups their appends.
const CONCURRENCY: usize = 16;

/// Why a file cannot be imported at all (a bad row only rejects that row).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file has no header line.
    #[error("the file is empty; the first line must be the header person_id,role_id,school_id")]
    Empty,
    /// The header lacks a column.
    #[error("the header lacks the column {column:?}; expected person_id,role_id,school_id")]
    MissingColumn {
        /// The missing column.
        column: &'static str,
    },
    /// The header names a column twice: which one a row means would be a guess.
    #[error("the header names the column {column:?} twice")]
    DuplicateColumn {
        /// The column.
        column: &'static str,
    },
    /// The header has a column this import does not know.
    #[error("the header has an unknown column {column:?}; expected person_id,role_id,school_id")]
    UnknownColumn {
        /// The column found.
        column: String,
    },
    /// The header line is not CSV text.
    #[error("the header line cannot be read: {0}")]
    Header(#[source] csv::Error),
    /// One row is malformed: only that row is rejected.
    #[error(transparent)]
    Row(#[from] RowError),
}

/// One data row, parsed into its command or refused as malformed.
#[derive(Debug)]
pub struct Row {
    /// 1 for the first line after the header.
    pub row: u64,
    /// The row's `AssignRole`, or the problem that makes it one no service would take.
    pub command: Result<Command, ApiError>,
}

/// Whether a row was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    /// The row's role assignment is recorded (or already was).
    Accepted,
    /// The row was refused and recorded nothing.
    Rejected,
}

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct RowResult {
    /// 1 for the first line after the header.
    pub row: u64,
    /// Accepted or rejected.
    pub status: RowStatus,
    /// The error code of a rejected row (as a command would answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Why a row was rejected, for a person to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The command id an accepted row was recorded under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
}

/// The answer to an import: one result per row, in file order, and the totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ImportReport {
    /// One result per data row.
    pub rows: Vec<RowResult>,
    /// Rows recorded.
    pub accepted: u64,
    /// Rows refused.
    pub rejected: u64,
}

/// Reads a role-assignment file into rows, each with its command or its problem.
///
/// # Errors
/// [`ImportError`] when the header is missing or wrong: then nothing is imported.
pub fn parse_role_assignments(csv_text: &[u8]) -> Result<Vec<Row>, ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(csv_text);
    let header = reader.headers().map_err(ImportError::Header)?.clone();
    if header.iter().all(str::is_empty) {
        return Err(ImportError::Empty);
    }
    let mut index = [usize::MAX; 3];
    for (i, column) in header.iter().enumerate() {
        let column = column.trim_start_matches('\u{feff}');
        match COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(column)) {
            Some(k) if index[k] != usize::MAX => {
                return Err(ImportError::DuplicateColumn { column: COLUMNS[k] })
            }
            Some(k) => index[k] = i,
            None => {
                return Err(ImportError::UnknownColumn {
                    column: column.to_owned(),
                })
            }
        }
    }
    for (k, column) in COLUMNS.iter().enumerate().take(2) {
        if index[k] == usize::MAX {
            return Err(ImportError::MissingColumn { column });
        }
    }
    let mut rows = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let row = n as u64 + 1;
        let command = record
            .map_err(|e| RowError::Unreadable(e.to_string()))
            .and_then(|record| {
                // A district-wide grant is an empty school, never a missing one: a
                // line cut short is refused, not read as "every school".
                if record.len() != header.len() {
                    return Err(RowError::Fields {
                        expected: header.len(),
                        got: record.len(),
                    });
                }
                let field = |k: usize| record.get(index[k]).unwrap_or("").to_owned();
                let mut body = serde_json::json!({
                    "person_id": field(0),
                    "role_id": field(1),
                });
                let school = if index[2] == usize::MAX {
                    String::new()
                } else {
                    field(2)
                };
                if !school.is_empty() {
                    body["school_id"] = school.into();
                }
                Ok(body)
            })
            .map_err(|e| ApiError::Import(ImportError::Row(e)))
            .and_then(|body| parse("AssignRole", body));
        rows.push(Row { row, command });
    }
    Ok(rows)
}

/// What is wrong with one row before any rule sees it.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// The line is not CSV (e.g. not UTF-8).
    #[error("the row cannot be read: {0}")]
    Unreadable(String),
    /// Not as many fields as the header names.
    #[error("the row has {got} fields, the header {expected}")]
    Fields {
        /// Fields in the header.
        expected: usize,
        /// Fields in the row.
        got: usize,
    },
}

/// Runs every row through `service` as `caller`, 16 at a time, calling
/// `progress` after each, and answers one result per row in file order.
pub async fn import_rows(
    service: &CommandService,
    caller: &Caller,
    key: Option<Uuid>,
    rows: Vec<Row>,
    metrics: Option<&Metrics>,
    mut progress: impl FnMut(&RowResult),
) -> ImportReport {
    let mut results = futures::stream::iter(rows)
        .map(|row| async move {
            let command = match row.command {
                Ok(command) => command,
                Err(problem) => {
                    // The command service counts what reaches it; a row refused before
                    // is counted here, as the API counts a malformed request.
                    if let Some(metrics) = metrics {
                        metrics.record("AssignRole", problem.code(), Duration::ZERO);
                    }
                    return rejected(row.row, &problem);
                }
            };
            let mut ctx = CommandContext::new(caller.district.clone(), caller.actor.clone());
            if let Some(key) = key {
                ctx =
                    ctx.with_command_id(Uuid::new_v5(&key, format!("row-{}", row.row).as_bytes()));
            }
            let result = service.execute(&ctx, &command).await;
            match result {
                Ok(done) => RowResult {
                    row: row.row,
                    status: RowStatus::Accepted,
                    code: None,
                    detail: None,
                    command_id: Some(done.command_id),
                },
                Err(e) => rejected(row.row, &ApiError::from(e)),
            }
        })
        .buffered(CONCURRENCY);
    let mut report = ImportReport {
        rows: Vec::new(),
        accepted: 0,
        rejected: 0,
    };
    while let Some(result) = results.next().await {
        progress(&result);
        match result.status {
            RowStatus::Accepted => report.accepted += 1,
            RowStatus::Rejected => report.rejected += 1,
        }
        report.rows.push(result);
    }
    report
}

fn rejected(row: u64, problem: &ApiError) -> RowResult {
    let problem = problem.problem();
    RowResult {
        row,
        status: RowStatus::Rejected,
        code: Some(problem.code),
        detail: Some(problem.detail),
        command_id: None,
    }
}

/// `POST /v1/imports/role-assignments`.
pub(crate) async fn post_role_assignments(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ImportReport>, ApiError> {
    // API.md: the file is `text/csv`. Another declared type (JSON posted here by
    // mistake, a form) is not read as CSV.
    let media_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if !matches!(media_type.as_deref(), Some("text/csv" | "application/csv")) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = body_bytes(body, state.limits.import_body)?;
    let key = idempotency_key(&headers)?;
    let rows = parse_role_assignments(&bytes)?;
    let report = import_rows(
        &state.commands,
        &caller,
        key,
        rows,
        Some(&state.metrics),
        |_| {},
    )
    .await;
    Ok(Json(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_into_assign_role_commands_or_row_problems() {
        let person = Uuid::now_v7();
        let school = Uuid::now_v7();
        let text = format!(
            "person_id,role_id,school_id\n{person},school_admin,{school}\n{person},district_admin,\nnot-a-uuid,teacher,{school}\n{person},Bad Role,\n"
        );
        let rows = parse_role_assignments(text.as_bytes()).unwrap();
        assert_eq!(rows.len(), 4);
        assert!(rows[0].command.is_ok() && rows[1].command.is_ok());
        match &rows[1].command {
            Ok(Command::AssignRole(c)) => assert_eq!(c.school_id, None),
            other => panic!("{other:?}"),
        }
        for bad in &rows[2..] {
            assert_eq!(bad.command.as_ref().unwrap_err().code(), "validation");
        }
        assert_eq!(rows[3].row, 4);
    }

    #[test]
    fn a_row_with_too_few_or_too_many_fields_says_so() {
        let person = Uuid::now_v7();
        let text = format!(
            "person_id,role_id,school_id\ngarbage\n{person},teacher,,extra\n{person},teacher\n{person},district_admin,\n"
        );
        let rows = parse_role_assignments(text.as_bytes()).unwrap();
        let detail = |i: usize| rows[i].command.as_ref().unwrap_err().to_string();
        assert!(
            detail(0).contains("the row has 1 fields, the header 3"),
            "{}",
            detail(0)
        );
        assert!(
            detail(1).contains("the row has 4 fields, the header 3"),
            "{}",
            detail(1)
        );
        assert!(
            detail(2).contains("the row has 2 fields, the header 3"),
            "a line cut short is no district-wide grant: {}",
            detail(2)
        );
        match &rows[3].command {
            Ok(Command::AssignRole(c)) => assert_eq!(c.school_id, None, "an empty school is"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_header_naming_a_column_twice_refuses_the_whole_file() {
        assert!(matches!(
            parse_role_assignments(b"person_id,role_id,school_id,person_id\n"),
            Err(ImportError::DuplicateColumn {
                column: "person_id"
            })
        ));
    }

    #[test]
    fn a_wrong_header_refuses_the_whole_file() {
        assert!(matches!(
            parse_role_assignments(b"person,role\n"),
            Err(ImportError::UnknownColumn { .. })
        ));
        assert!(matches!(
            parse_role_assignments(b"person_id,school_id\n"),
            Err(ImportError::MissingColumn { column: "role_id" })
        ));
        assert!(matches!(
            parse_role_assignments(b""),
            Err(ImportError::Empty)
        ));
        let rows = parse_role_assignments(b"\xef\xbb\xbfrole_id,person_id\n").unwrap();
        assert!(rows.is_empty(), "a BOM and any column order are fine");
    }
}
