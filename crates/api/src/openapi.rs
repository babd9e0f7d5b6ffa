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
use schemars::{JsonSchema, SchemaGenerator};
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
        RegisterSchool, RegisterPerson, LinkGuardian, UnlinkGuardian, SetStudentTeachers, DefineRole,
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
    let reads = read_operations(&mut generator);
    let extras = [
        crate::preview::operation(&mut generator),
        crate::stream::operation(&mut generator),
    ];
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
    for (path, operation) in reads {
        let mut operation = operation;
        let responses = operation["get"]["responses"]
            .as_object_mut()
            .expect("a read has responses");
        for (status, text) in [
            ("400", "A malformed query string or id (code `validation`)."),
            ("401", "No token, or one that does not verify (code `unauthenticated`)."),
            ("403", "The caller may not see this (code `not_permitted`)."),
            ("404", "Unknown here (code `unknown_conversation` / `unknown_person`), another district's ids included."),
            ("500", "An internal failure (code `internal`)."),
            ("503", "The read models have not applied `min_position` after 5 s (code `stale`), or the store is unavailable."),
        ] {
            responses.insert(status.into(), error(text));
        }
        paths.insert(path.into(), operation);
    }
    for (path, mut operation, errors) in extras {
        if let Some(method) = operation
            .as_object_mut()
            .and_then(|o| o.values_mut().next())
        {
            for (status, text) in errors {
                method["responses"][status] = error(text);
            }
        }
        paths.insert(path.into(), operation);
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
                "415": error("The body is not declared `text/csv` (or `application/csv`)."),
                "500": error("An internal failure."),
                "503": error("The store is unavailable or the request timed out.")
            }
        }}),
    );
    let twilio_form = json!({
        "required": true,
        "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object", "additionalProperties": {"type": "string"}}}}
    });
    let signature = json!({
        "name": "X-Twilio-Signature", "in": "header", "required": true,
        "description": "Base64 HMAC-SHA1, with the Twilio auth token, over the full URL (HOMEROOM_PUBLIC_URL + path + query) followed by every form field's name and value, sorted by name.",
        "schema": {"type": "string"}
    });
    let twiml = json!({"description": "Recorded. TwiML: an empty `<Response/>`, or the answer to STOP, START or HELP as a `<Message>`.", "content": {"text/xml": {"schema": {"type": "string"}}}});
    paths.insert(
        "/v1/webhooks/twilio/inbound".into(),
        json!({"post": {
            "operationId": "TwilioInbound", "tags": ["webhooks"], "security": [],
            "summary": "A text arrived (Twilio's inbound message webhook).",
            "description": "Recorded first, exactly as received, then routed by (From, To) to the conversation that last texted From from To: posted there as the family member's reply, kept as refused when the conversation is stopped or the text holds blocked content, or kept as unroutable. STOP, START and HELP are honoured and answered. The same MessageSid twice records it once.",
            "parameters": [signature.clone()],
            "requestBody": twilio_form.clone(),
            "responses": {
                "200": twiml.clone(),
                "400": error("A field Twilio always sends is missing or malformed (code `validation`)."),
                "403": error("The signature does not verify, or no SMS provider is configured to check it (code `invalid_signature`). Nothing is recorded."),
                "503": error("The store is unavailable (code `unavailable`).")
            }
        }}),
    );
    paths.insert(
        "/v1/webhooks/twilio/status".into(),
        json!({"post": {
            "operationId": "TwilioStatus", "tags": ["webhooks"], "security": [],
            "summary": "A text's status changed (Twilio's StatusCallback, the URL each text asked for).",
            "description": "Records the delivery's outcome (sent, delivered, failed with Twilio's ErrorCode); outcomes only move forward, so late or repeated callbacks change nothing. A callback for a delivery this district does not have is answered 200 and ignored.",
            "parameters": [
                signature,
                {"name": "district", "in": "query", "required": true, "schema": {"type": "string"}},
                {"name": "delivery", "in": "query", "required": true, "schema": {"type": "string", "format": "uuid"}}
            ],
            "requestBody": twilio_form,
            "responses": {
                "200": twiml,
                "400": error("No district or delivery in the URL, or MessageSid or MessageStatus missing (code `validation`)."),
                "403": error("The signature does not verify, or no SMS provider is configured to check it (code `invalid_signature`). Nothing is recorded."),
                "503": error("The store is unavailable (code `unavailable`).")
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
            {"name": "reads", "description": "Views built from the log (eventually consistent; pass `min_position` to read your own writes). What a caller sees follows their roles."},
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

/// The query parameters of `T` (a flat struct of optional fields) as OpenAPI parameters.
fn query_parameters<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    let schema = T::json_schema(generator).to_value();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let parameters: Vec<Value> = schema["properties"]
        .as_object()
        .map(|properties| {
            properties
                .iter()
                .map(|(name, property)| {
                    let mut property = property.clone();
                    let description = property
                        .as_object_mut()
                        .and_then(|p| p.remove("description"))
                        .unwrap_or(Value::Null);
                    json!({
                        "name": name,
                        "in": "query",
                        "required": required.contains(&name.as_str()),
                        "description": description,
                        "schema": property,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Value::Array(parameters)
}

/// Every read endpoint: its path, parameters and answer schema, from the code's types.
fn read_operations(generator: &mut SchemaGenerator) -> Vec<(&'static str, Value)> {
    use crate::queries::{
        AuditParams, ExportParams, InboxParams, OversightParams, PageParams, ReadParams,
    };
    use homeroom_app::queries::VerifyReport;
    use homeroom_app::views::{AuditPage, Conversation, Inbox, Oversight, StudentRecord};
    let id = |what: &str| json!({"name": "id", "in": "path", "required": true, "description": what, "schema": {"type": "string", "format": "uuid"}});
    let with_id = |what: &str, query: Value| {
        let mut list = vec![id(what)];
        list.extend(query.as_array().cloned().unwrap_or_default());
        Value::Array(list)
    };
    let json_answer = |description: &str, schema: Value| json!({"200": {"description": description, "content": {"application/json": {"schema": schema}}}});
    let operation = |id: &str, summary: &str, parameters: Value, responses: Value| {
        json!({"get": {
            "operationId": id, "tags": ["reads"], "summary": summary,
            "security": [{"bearer": []}], "parameters": parameters, "responses": responses
        }})
    };
    vec![
        ("/v1/inbox", operation(
            "Inbox",
            "The caller's conversations (box=personal) or the school inboxes they hold school_inbox for (box=school), most recent activity first.",
            query_parameters::<InboxParams>(generator),
            json_answer("A page of conversations; pass `next` as `cursor` for the next page.", generator.subschema_for::<Inbox>().to_value()),
        )),
        ("/v1/conversations/{id}", operation(
            "Conversation",
            "A conversation: participants, every message in order with each recipient's channel and status, and who has read it.",
            with_id("The conversation.", query_parameters::<ReadParams>(generator)),
            json_answer("The thread.", generator.subschema_for::<Conversation>().to_value()),
        )),
        ("/v1/conversations/{id}/export", operation(
            "ExportConversation",
            "The whole conversation as a file a records officer can hand over (participants, every message with time, channel and status).",
            with_id("The conversation.", query_parameters::<ExportParams>(generator)),
            json!({"200": {"description": "A download (Content-Disposition: attachment).", "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
                "text/csv": {"schema": {"type": "string"}}
            }}}),
        )),
        ("/v1/students/{id}/messages", operation(
            "StudentRecord",
            "The messages on a student's record, oldest first; inbound replies only with inbound_replies.",
            with_id("The student.", query_parameters::<PageParams>(generator)),
            json_answer("A page of the record.", generator.subschema_for::<StudentRecord>().to_value()),
        )),
        ("/v1/oversight/conversations", operation(
            "Oversight",
            "Every conversation of the schools the caller holds oversight for, personal ones included, searchable by text, participant and date.",
            query_parameters::<OversightParams>(generator),
            json_answer("A page of conversations.", generator.subschema_for::<Oversight>().to_value()),
        )),
        ("/v1/audit", operation(
            "Audit",
            "Every event of the district with its metadata and hash, in position order (scope system, or oversight district-wide).",
            query_parameters::<AuditParams>(generator),
            json_answer("A page of events; pass `next` as `after` for the next page.", generator.subschema_for::<AuditPage>().to_value()),
        )),
        ("/v1/audit/verify", operation(
            "VerifyAudit",
            "Checks every hash chain of the district against the event store (scope system, or oversight district-wide).",
            query_parameters::<ReadParams>(generator),
            json_answer("The verification report.", generator.subschema_for::<VerifyReport>().to_value()),
        )),
    ]
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
    fn every_route_of_the_router_is_documented() {
        let doc = document();
        for path in [
            "/v1/inbox",
            "/v1/conversations/{id}",
            "/v1/conversations/{id}/export",
            "/v1/students/{id}/messages",
            "/v1/oversight/conversations",
            "/v1/audit",
            "/v1/audit/verify",
            "/v1/preview",
            "/v1/stream",
            "/v1/imports/role-assignments",
            "/v1/webhooks/twilio/inbound",
            "/v1/webhooks/twilio/status",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is not documented");
        }
        let inbound = &doc["paths"]["/v1/webhooks/twilio/inbound"]["post"];
        assert_eq!(inbound["parameters"][0]["name"], "X-Twilio-Signature");
        assert!(inbound["responses"]["403"].is_object());
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
