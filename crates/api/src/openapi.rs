//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the code.
//!
//! Every name in [`homeroom_domain::Command::API_NAMES`] gets `POST /v1/commands/{Name}` with the JSON
//! Schema of its command struct (derived by `schemars` from the same types the server
//! deserialises), the [`CommandResult`] schema and the [`Problem`] schema of each error
//! status. The other endpoints are listed beside them. Nothing here is written by hand
//! that the code already knows.

use crate::commands::CommandResult;
use crate::health::{Health, Readiness};
use crate::import::ImportReport;
use crate::problem::{Problem, PROBLEM_JSON};
use homeroom_domain::commands;
use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};
use std::sync::LazyLock;

static DOCUMENT: LazyLock<Value> = LazyLock::new(build);

/// The document, built once per process.
pub fn document() -> &'static Value {
    &DOCUMENT
}

/// The schema of each API command's body, by name, in `Command::API_NAMES` order.
macro_rules! command_schemas {
    ($generator:ident; $($name:ident),* $(,)?) => {
        vec![$((stringify!($name), $generator.subschema_for::<commands::$name>())),*]
    };
}

fn build() -> Value {
    let mut generator = SchemaGenerator::new(
        SchemaSettings::draft2020_12().with(|s| s.definitions_path = "/components/schemas".into()),
    );
    let commands = command_schemas!(generator;
        RegisterSchool, RegisterPerson, LinkGuardian, SetStudentTeachers, DefineRole,
        AssignRole, RevokeRole, ChangeDistrictSettings, SetContactPreferences,
        ResetContactPoint, AddSenderNumbers, SendPersonalMessage, StartConversation,
        PostMessage, StopConversation, RenameConversation, MuteConversation,
        UnmuteConversation, ArchiveConversation, UnarchiveConversation, MarkRead,
        RecordDeliveryOutcome,
    );
    let result = generator.subschema_for::<CommandResult>().to_value();
    let problem = generator.subschema_for::<Problem>();
    let report = generator.subschema_for::<ImportReport>();
    let health = generator.subschema_for::<Health>();
    let readiness = generator.subschema_for::<Readiness>();
    let schemas = generator.take_definitions(true);

    let problem = problem.to_value();
    let error = |description: &str| json!({"description": description, "content": {PROBLEM_JSON: {"schema": problem}}});
    let mut paths = Map::new();
    for (name, schema) in commands {
        let description = schemas
            .get(name)
            .and_then(|s| s.get("description"))
            .and_then(Value::as_str)
            .unwrap_or(name);
        paths.insert(
            format!("/v1/commands/{name}"),
            json!({"post": {
                "operationId": name,
                "tags": [tag_of(name)],
                "summary": description.lines().next().unwrap_or(name),
                "description": description,
                "security": [{"bearer": []}],
                "parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}],
                "requestBody": {
                    "required": true,
                    "content": {"application/json": {"schema": schema.to_value()}}
                },
                "responses": {
                    "200": {
                        "description": "Recorded (or, for a repeated Idempotency-Key, the first result; header Idempotent-Replayed: true).",
                        "content": {"application/json": {"schema": result}}
                    },
                    "400": error("Malformed: not a JSON object, an unknown field, a wrong type, a bad id or Idempotency-Key (code `validation`). Nothing is recorded."),
                    "401": error("No token, or one that does not verify (code `unauthenticated`)."),
                    "403": error("The actor may not do this (code `not_permitted`)."),
                    "404": error("An unknown person, conversation, delivery, school or role (another district's ids included), or an unknown command."),
                    "409": error("`version_conflict`, `idempotency_key_reused` or `already_exists`."),
                    "413": error("The body is larger than 64 KiB (code `too_large`)."),
                    "422": error("A product rule refused the command (e.g. `recipient_too_young`, `conversation_stopped`). Nothing is recorded."),
                    "500": error("An internal failure (code `internal`); the detail holds a reference for the server log."),
                    "503": error("The store is unavailable, the server is shutting down, or the request timed out (code `unavailable`); retry with the same Idempotency-Key.")
                }
            }}),
        );
    }
    paths.insert(
        "/v1/imports/role-assignments".into(),
        json!({"post": {
            "operationId": "ImportRoleAssignments",
            "tags": ["directory"],
            "summary": "Assigns roles in bulk from a CSV file.",
            "description": "A `text/csv` body with the header `person_id,role_id,school_id` (`school_id` empty for a district-wide role). Each row is one `AssignRole` command with the caller's identity, recorded or refused on its own: a bad row never stops the good ones and never half-applies. With an Idempotency-Key, sending the same file again records nothing twice.",
            "security": [{"bearer": []}],
            "parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}],
            "requestBody": {
                "required": true,
                "content": {"text/csv": {"schema": {"type": "string"}, "example": "person_id,role_id,school_id\n0190c1f6-0000-7000-8000-000000000001,school_admin,0190c1f6-0000-7000-8000-0000000000aa\n"}}
            },
            "responses": {
                "200": {"description": "One result per row, in file order.", "content": {"application/json": {"schema": report.to_value()}}},
                "400": error("The header is missing or wrong, or the Idempotency-Key is not a UUID. Nothing is recorded."),
                "401": error("No token, or one that does not verify."),
                "413": error("The file is larger than 10 MiB."),
                "500": error("An internal failure."),
                "503": error("The store is unavailable or the request timed out.")
            }
        }}),
    );
    paths.insert(
        "/healthz".into(),
        json!({"get": {
            "operationId": "Health", "tags": ["operations"], "security": [],
            "summary": "The process is up.",
            "responses": {"200": {"description": "Always, while the process serves.", "content": {"application/json": {"schema": health.to_value()}}}}
        }}),
    );
    paths.insert(
        "/readyz".into(),
        json!({"get": {
            "operationId": "Ready", "tags": ["operations"], "security": [],
            "summary": "The event store answers.",
            "responses": {
                "200": {"description": "Ready, with the log's head position.", "content": {"application/json": {"schema": readiness.to_value()}}},
                "503": error("The event store does not answer (code `unavailable`).")
            }
        }}),
    );
    paths.insert(
        "/metrics".into(),
        json!({"get": {
            "operationId": "Metrics", "tags": ["operations"], "security": [],
            "summary": "Prometheus metrics: homeroom_commands_total and homeroom_command_duration_seconds by command and outcome.",
            "responses": {"200": {"description": "Prometheus text exposition format.", "content": {"text/plain": {"schema": {"type": "string"}}}}}
        }}),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {
            "operationId": "OpenApi", "tags": ["operations"], "security": [],
            "summary": "This document.",
            "responses": {"200": {"description": "OpenAPI 3.1.", "content": {"application/json": {"schema": {"type": "object"}}}}}
        }}),
    );

    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Homeroom",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "An event-sourced messaging core for schools. Send commands as `POST /v1/commands/{Name}` with a bearer token (`homeroom token` prints one); every error is `application/problem+json` with a stable `code`.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "tags": [
            {"name": "directory", "description": "Schools, people, roles and settings (scope `system` or permission `roles_admin`)."},
            {"name": "messaging", "description": "Conversations and messages; the acting person comes from the token."},
            {"name": "delivery", "description": "Delivery workers report outcomes (scope `system`)."},
            {"name": "operations", "description": "Health, readiness, metrics and this document; no token needed."}
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "Claims: sub (a person's UUID, or a service name with scope system), district, exp, optional scope."}
            },
            "parameters": {
                "IdempotencyKey": {
                    "name": "Idempotency-Key", "in": "header", "required": false,
                    "description": "A UUID that becomes the command id: the same key with the same body answers the first result and records nothing new; with another body it is 409 `idempotency_key_reused`.",
                    "schema": {"type": "string", "format": "uuid"}
                }
            }
        }
    })
}

fn tag_of(name: &str) -> &'static str {
    match name {
        "RecordDeliveryOutcome" => "delivery",
        "SendPersonalMessage"
        | "StartConversation"
        | "PostMessage"
        | "StopConversation"
        | "RenameConversation"
        | "MuteConversation"
        | "UnmuteConversation"
        | "ArchiveConversation"
        | "UnarchiveConversation"
        | "MarkRead" => "messaging",
        _ => "directory",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use homeroom_domain::Command;

    #[test]
    fn every_api_command_has_a_path_with_its_body_schema() {
        let doc = document();
        for name in Command::API_NAMES {
            let op = &doc["paths"][format!("/v1/commands/{name}")]["post"];
            let reference = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has no body schema"));
            assert_eq!(reference, format!("#/components/schemas/{name}"));
            assert!(
                doc["components"]["schemas"][name]["properties"].is_object(),
                "{name}"
            );
        }
        let listed = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|p| p.starts_with("/v1/commands/"))
            .count();
        assert_eq!(
            listed,
            Command::API_NAMES.len(),
            "no command beyond the API's"
        );
    }

    #[test]
    fn fields_left_out_of_an_answer_are_not_required() {
        let schemas = &document()["components"]["schemas"];
        assert_eq!(
            schemas["CommandResult"]["required"],
            serde_json::json!(["command_id", "position", "events"])
        );
        assert_eq!(
            schemas["RowResult"]["required"],
            serde_json::json!(["row", "status"])
        );
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"").skip(1) {
            let target = &piece[..piece.find('"').unwrap()];
            let pointer = target.trim_start_matches('#');
            assert!(doc.pointer(pointer).is_some(), "{target} does not resolve");
        }
    }
}
