//! Merge fields: `{student_name}` and friends in a subject or body, rendered per
//! recipient.
//!
//! Syntax: `{` + one or more of `[A-Za-z0-9_]` + `}` is a field and must be one of
//! [`MERGE_FIELDS`], otherwise the whole message is refused (so a typo like
//! `{studnet_name}` never reaches a family). Any other brace is plain text. Only staff
//! write templates ([`is_template_by`]).

use crate::person::PersonState;
use crate::validation::ValidationError;

/// Whether what `author` writes is a template whose merge fields are filled in per
/// recipient. Merge fields are the staff's tool for writing to many families at once; a
/// parent who types `{lol}` or `{recipient_name}` means those characters, so what a
/// family member or student writes goes out as typed (and is never refused for a field).
pub fn is_template_by(author: &PersonState) -> bool {
    author.is_staff()
}

/// The fields a template may use.
pub const MERGE_FIELDS: &[&str] = &[
    "student_name",
    "recipient_name",
    "school_name",
    "sender_name",
];

/// The values of the merge fields for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeValues<'a> {
    /// The student the message is about: the recipient itself for a student; for a
    /// guardian, their students taking part in the conversation, else those at the
    /// conversation's school, else all ("Dennis and Mia"); the recipient's own name
    /// otherwise.
    pub student_name: &'a str,
    /// The recipient's name.
    pub recipient_name: &'a str,
    /// The conversation's school.
    pub school_name: &'a str,
    /// The author, or the school when sent from the school.
    pub sender_name: &'a str,
}

impl MergeValues<'_> {
    fn get(&self, field: &str) -> Option<&str> {
        match field {
            "student_name" => Some(self.student_name),
            "recipient_name" => Some(self.recipient_name),
            "school_name" => Some(self.school_name),
            "sender_name" => Some(self.sender_name),
            _ => None,
        }
    }
}

enum Piece<'t> {
    Text(&'t str),
    Field(&'t str),
}

/// Splits a template into text and `{field}` pieces.
fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with('}') {
            out.push(Piece::Text(&rest[..open]));
            out.push(Piece::Field(&after[..name_len]));
            rest = &after[name_len + 1..];
        } else {
            out.push(Piece::Text(&rest[..=open]));
            rest = after;
        }
    }
    out.push(Piece::Text(rest));
    out
}

/// Checks that every `{field}` in `template` is known, before anything is recorded.
///
/// # Errors
/// [`ValidationError::UnknownMergeField`] naming the first unknown field.
pub fn check(template: &str) -> Result<(), ValidationError> {
    for piece in pieces(template) {
        if let Piece::Field(name) = piece {
            if !MERGE_FIELDS.contains(&name) {
                return Err(ValidationError::UnknownMergeField {
                    field: name.to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// Whether `template` uses `field`, so callers look up only the facts they need.
pub fn uses(template: &str, field: &str) -> bool {
    pieces(template)
        .iter()
        .any(|piece| matches!(piece, Piece::Field(name) if *name == field))
}

/// Renders `template` for one recipient.
///
/// # Errors
/// [`ValidationError::UnknownMergeField`] naming the first unknown field.
pub fn render(template: &str, values: &MergeValues<'_>) -> Result<String, ValidationError> {
    let mut out = String::with_capacity(template.len());
    for piece in pieces(template) {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Field(name) => match values.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    return Err(ValidationError::UnknownMergeField {
                        field: name.to_owned(),
                    })
                }
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: MergeValues<'static> = MergeValues {
        student_name: "Dennis",
        recipient_name: "Pat",
        school_name: "Hillside",
        sender_name: "Ms Lee",
    };

    #[test]
    fn merge_fields_are_rendered_per_recipient() {
        let text = render(
            "Dear {recipient_name}, {student_name} did well at {school_name}. {sender_name}",
            &VALUES,
        );
        assert_eq!(
            text.unwrap(),
            "Dear Pat, Dennis did well at Hillside. Ms Lee"
        );
    }

    #[test]
    fn an_unknown_merge_field_is_refused() {
        let err = ValidationError::UnknownMergeField {
            field: "studnet_name".to_owned(),
        };
        assert_eq!(check("Hi {studnet_name}"), Err(err.clone()));
        assert_eq!(render("Hi {studnet_name}", &VALUES), Err(err));
    }

    #[test]
    fn other_braces_are_plain_text() {
        assert_eq!(check("a { b } {} {x-y} {"), Ok(()));
        assert_eq!(
            render("{ {} {{student_name}} {", &VALUES).unwrap(),
            "{ {} {Dennis} {"
        );
    }

    #[test]
    fn uses_finds_fields() {
        assert!(uses("Hi {student_name}", "student_name"));
        assert!(!uses("Hi {recipient_name}", "student_name"));
    }
}
