//! Commands as upstream apps name and send them: `POST /v1/commands/{Name}` with a JSON
//! body. The HTTP layer, the CLI and the benchmarks all parse commands here.

use homeroom_domain::Command;

/// Every command name the API accepts.
pub const API_COMMANDS: &[&str] = Command::API_NAMES;

/// Why a named JSON body is not a command.
#[derive(Debug, thiserror::Error)]
pub enum CommandParseError {
    /// No command has that name over the API.
    #[error("unknown command {name}")]
    UnknownCommand {
        /// The name asked for.
        name: String,
    },
    /// The body does not fit the command: a missing or unknown field, a wrong type, a
    /// malformed id or value.
    #[error("{name}: {source}")]
    Body {
        /// The command's name.
        name: String,
        /// What serde said, naming the field.
        #[source]
        source: serde_json::Error,
    },
}

/// Parses the body of the API command `name`.
///
/// # Errors
/// [`CommandParseError`] when the name is unknown or the body does not fit.
pub fn parse_command(name: &str, body: serde_json::Value) -> Result<Command, CommandParseError> {
    match Command::deserialize_named(name, body) {
        Ok(Some(command)) => Ok(command),
        Ok(None) => Err(CommandParseError::UnknownCommand {
            name: name.to_owned(),
        }),
        Err(source) => Err(CommandParseError::Body {
            name: name.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_and_fields_are_refused() {
        assert!(matches!(
            parse_command("EditMessage", serde_json::json!({})),
            Err(CommandParseError::UnknownCommand { .. })
        ));
        assert!(matches!(
            parse_command("QueueDelivery", serde_json::json!({})),
            Err(CommandParseError::UnknownCommand { .. })
        ));
        let err = parse_command(
            "StopConversation",
            serde_json::json!({"conversation_id": uuid::Uuid::now_v7(), "extra": 1}),
        )
        .unwrap_err();
        assert!(matches!(err, CommandParseError::Body { .. }));
    }

    #[test]
    fn a_well_formed_body_parses() {
        let id = uuid::Uuid::now_v7();
        let command = parse_command(
            "StopConversation",
            serde_json::json!({"conversation_id": id}),
        )
        .unwrap();
        assert_eq!(command.name(), "StopConversation");
    }
}
