//! Message text: bodies, subjects, titles, and the content guard that refuses sensitive
//! data before anything is recorded or sent.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::validation::{required_text, ValidationError};

/// The longest body accepted, in characters.
pub const MAX_BODY_CHARS: usize = 5000;
/// The longest subject or conversation title accepted, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// The longest blocked pattern accepted, in characters.
pub const MAX_PATTERN_CHARS: usize = 100;

/// A message body as sent (merge fields not yet rendered): trimmed, non-empty, at most
/// [`MAX_BODY_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody(String);

impl MessageBody {
    /// Trims `value` and checks its length.
    ///
    /// # Errors
    /// [`ValidationError::Empty`] or [`ValidationError::TooLong`] (field `body`).
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        written_text("body", value, MAX_BODY_CHARS).map(Self)
    }

    /// A body someone outside Homeroom wrote (an SMS reply), kept as written: trimmed,
    /// not empty, up to `max` characters; never checked for merge fields.
    ///
    /// # Errors
    /// [`ValidationError::Empty`] or [`ValidationError::TooLong`] (field `body`).
    pub fn from_outside(value: &str, max: usize) -> Result<Self, ValidationError> {
        required_text("body", value, max).map(Self)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An optional subject: blank means none; otherwise trimmed and at most
/// [`MAX_TITLE_CHARS`] characters.
///
/// # Errors
/// [`ValidationError::TooLong`] (field `subject`).
pub fn subject(value: Option<&str>) -> Result<Option<String>, ValidationError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => {
            one_line("subject", written_text("subject", text, MAX_TITLE_CHARS)?).map(Some)
        }
    }
}

/// A conversation title: trimmed, 1 to [`MAX_TITLE_CHARS`] characters.
///
/// # Errors
/// [`ValidationError::Empty`] or [`ValidationError::TooLong`] (field `title`).
pub fn title(value: &str) -> Result<String, ValidationError> {
    one_line("title", written_text("title", value, MAX_TITLE_CHARS)?)
}

/// A text a user writes in Homeroom (a body, a subject, a title): as
/// [`required_text`], and also empty when all it holds is characters that show nothing
/// (a message of zero-width spaces would arrive as a blank, unread message), and never
/// with a control character other than a line break or a tab (a NUL or an escape breaks
/// SMS providers and exported files, and shows nothing).
///
/// # Errors
/// [`ValidationError::Empty`], [`ValidationError::TooLong`] or
/// [`ValidationError::ControlCharacter`].
fn written_text(field: &'static str, value: &str, max: usize) -> Result<String, ValidationError> {
    let text = required_text(field, value, max)?;
    if text.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        return Err(ValidationError::Empty { field });
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ValidationError::ControlCharacter {
            field,
            code: u32::from(c),
        });
    }
    Ok(text)
}

/// A name (of a person, a school, a role): as a written text, and on one line
/// ([`breaks_one_line`]); titles and subjects are one line too. Names go into SMS signatures and labels, email headers
/// (`From: Principal Skinner <…>`), exported files and every read model; a line break
/// there would forge a header, and a NUL is refused by PostgreSQL, so one such name
/// must never be recorded.
///
/// # Errors
/// [`ValidationError::Empty`], [`ValidationError::TooLong`] or
/// [`ValidationError::ControlCharacter`].
pub fn name(field: &'static str, value: &str, max: usize) -> Result<String, ValidationError> {
    one_line(field, written_text(field, value, max)?)
}

/// Whether `c` breaks a line or turns the text around it: a control character, the
/// Unicode line and paragraph separators, and the bidirectional embeddings, overrides
/// and isolates (`U+202E` shows `Skinner` reversed, a way to spoof a name). Joiners
/// stay: Persian names are written with `U+200C`.
fn breaks_one_line(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` when it is one line ([`breaks_one_line`] finds nothing in it).
fn one_line(field: &'static str, text: String) -> Result<String, ValidationError> {
    match text.chars().find(|c| breaks_one_line(*c)) {
        Some(c) => Err(ValidationError::ControlCharacter {
            field,
            code: u32::from(c),
        }),
        None => Ok(text),
    }
}

/// A content-guard pattern in a deliberately tiny syntax, so district admins can write
/// one without learning regular expressions:
///
/// - `#` matches one digit (`0`–`9`, or a digit of another script);
/// - `@` matches one letter;
/// - any other character matches itself, ignoring case (a `-` also matches any dash or
///   hyphen, a space any space).
///
/// Characters that show nothing (soft hyphens, zero-width spaces and joiners, direction
/// marks, variation selectors, tag characters) are skipped in the text, as a reader
/// skips them.
///
/// A match must not be part of a longer run: when the pattern starts (ends) with `#`,
/// the character before (after) the match may not be a digit, and likewise letters for
/// `@`. So `###-##-####` finds `123-45-6789` in "SSN 123-45-6789." but not inside
/// "9123-45-67890".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BlockedPattern(String);

#[derive(Clone, Copy)]
enum Token {
    Digit,
    Letter,
    Literal(char),
}

impl Token {
    fn of(c: char) -> Token {
        match c {
            '#' => Token::Digit,
            '@' => Token::Letter,
            other => Token::Literal(other),
        }
    }

    fn matches(self, c: char) -> bool {
        match self {
            // Any script's digits (full-width `１２３` too), so a number typed on
            // another keyboard does not slip past the guard.
            Token::Digit => c.is_numeric(),
            Token::Letter => c.is_alphabetic(),
            Token::Literal(l) => {
                let (l, c) = (look_alike(l), look_alike(c));
                l == c || l.to_lowercase().eq(c.to_lowercase())
            }
        }
    }

    /// Whether a neighbour `c` would extend the run this edge token matched.
    fn extended_by(self, c: char) -> bool {
        match self {
            Token::Digit | Token::Letter => self.matches(c),
            Token::Literal(_) => false,
        }
    }
}

/// The character a pattern's literal stands for when the text uses a look-alike: every
/// dash and hyphen (non-breaking, en, em, minus, full-width) is `-`, every space
/// (non-breaking, thin, full-width) is ` `.
fn look_alike(c: char) -> char {
    match c {
        '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}' => '-',
        c if c.is_whitespace() => ' ',
        c => c,
    }
}

/// Whether `c` shows nothing where it stands (a soft hyphen, a zero-width space or
/// joiner, a word joiner, a byte-order mark, a direction mark, a variation selector, a
/// tag character): the guard reads the text without them, as the reader sees it, so
/// pasting one inside a number does not get it past.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{E0000}'..='\u{E007F}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

impl BlockedPattern {
    /// Checks a pattern: trimmed, non-empty, at most [`MAX_PATTERN_CHARS`] characters,
    /// no control characters.
    ///
    /// # Errors
    /// [`ValidationError::InvalidPattern`].
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let pattern = value.trim();
        let invalid = |reason| ValidationError::InvalidPattern {
            pattern: value.to_owned(),
            reason,
        };
        if pattern.is_empty() {
            return Err(invalid("it is empty"));
        }
        if pattern.chars().count() > MAX_PATTERN_CHARS {
            return Err(invalid("it is longer than 100 characters"));
        }
        if pattern.chars().any(char::is_control) {
            return Err(invalid("it holds a control character"));
        }
        Ok(Self(pattern.to_owned()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` holds a match (see the type's documentation).
    pub fn is_found_in(&self, text: &str) -> bool {
        self.is_found_in_visible(&visible_chars(text))
    }

    /// [`BlockedPattern::is_found_in`] on a text already read by [`visible_chars`], so
    /// that a list of patterns reads each text once.
    fn is_found_in_visible(&self, chars: &[char]) -> bool {
        let tokens: Vec<Token> = self.0.chars().map(Token::of).collect();
        let (Some(first), Some(last)) = (tokens.first().copied(), tokens.last().copied()) else {
            return false;
        };
        if chars.len() < tokens.len() {
            return false;
        }
        (0..=chars.len() - tokens.len()).any(|start| {
            let end = start + tokens.len();
            tokens
                .iter()
                .zip(&chars[start..end])
                .all(|(t, c)| t.matches(*c))
                && !(start > 0 && first.extended_by(chars[start - 1]))
                && !(end < chars.len() && last.extended_by(chars[end]))
        })
    }
}

impl TryFrom<String> for BlockedPattern {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, ValidationError> {
        Self::parse(&value)
    }
}

impl From<BlockedPattern> for String {
    fn from(pattern: BlockedPattern) -> String {
        pattern.0
    }
}

impl fmt::Display for BlockedPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The characters of `text` a reader sees: those that show nothing are skipped.
fn visible_chars(text: &str) -> Vec<char> {
    text.chars().filter(|c| !is_invisible(*c)).collect()
}

/// The first pattern found in any of `texts`, if one is: the content guard.
pub fn first_blocked<'p>(
    patterns: &'p [BlockedPattern],
    texts: &[&str],
) -> Option<&'p BlockedPattern> {
    if patterns.is_empty() {
        return None;
    }
    let texts: Vec<Vec<char>> = texts.iter().map(|t| visible_chars(t)).collect();
    patterns
        .iter()
        .find(|p| texts.iter().any(|text| p.is_found_in_visible(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> BlockedPattern {
        BlockedPattern::parse(s).unwrap()
    }

    #[test]
    fn a_name_is_one_line_of_visible_text() {
        assert_eq!(
            name("name", " Ada Lovelace ", 50),
            Ok("Ada Lovelace".to_owned())
        );
        for (bad, code) in [
            ("Staff\r\nBcc: x@y.z", 0x0D),
            ("nul\0name", 0),
            ("a\tb", 9),
            ("e\u{1b}[31m", 0x1B),
            ("A\u{2028}B", 0x2028),
            ("Mr \u{202E}rennikS", 0x202E),
        ] {
            assert_eq!(
                name("name", bad, 50),
                Err(ValidationError::ControlCharacter {
                    field: "name",
                    code
                }),
                "{bad:?}"
            );
        }
        assert_eq!(
            name("name", "\u{200B}\u{200B}", 50),
            Err(ValidationError::Empty { field: "name" })
        );
        // A Persian name keeps its zero-width non-joiner.
        assert!(name(
            "name",
            "\u{645}\u{6CC}\u{200C}\u{62E}\u{648}\u{627}\u{647}",
            50
        )
        .is_ok());
        // Titles and subjects are one line too; bodies keep their line breaks.
        assert!(title("Trip\nFriday").is_err());
        assert!(subject(Some("Trip\tFriday")).is_err());
        assert!(MessageBody::parse("Trip\nFriday").is_ok());
    }

    #[test]
    fn a_text_of_characters_that_show_nothing_is_empty_and_control_characters_are_refused() {
        assert_eq!(
            MessageBody::parse("\u{200B}\u{200D}"),
            Err(ValidationError::Empty { field: "body" })
        );
        assert_eq!(
            MessageBody::parse("a\u{0}b"),
            Err(ValidationError::ControlCharacter {
                field: "body",
                code: 0
            })
        );
        assert_eq!(
            title("\u{1b}[31mred"),
            Err(ValidationError::ControlCharacter {
                field: "title",
                code: 0x1b
            })
        );
        assert_eq!(
            MessageBody::parse("line one\n\tline two\r\n")
                .unwrap()
                .as_str(),
            "line one\n\tline two"
        );
        assert!(
            MessageBody::parse("👍\u{FE0F}").is_ok(),
            "a sign with its selector shows"
        );
        assert_eq!(
            MessageBody::from_outside("a\u{0}b", 1600).unwrap().as_str(),
            "a\u{0}b",
            "a family's SMS is kept as it came"
        );
    }

    #[test]
    fn bodies_are_trimmed_non_empty_and_at_most_5000_characters() {
        assert_eq!(MessageBody::parse("  hi  ").unwrap().as_str(), "hi");
        assert_eq!(
            MessageBody::parse(" \n "),
            Err(ValidationError::Empty { field: "body" })
        );
        assert!(MessageBody::parse(&"é".repeat(5000)).is_ok());
        assert_eq!(
            MessageBody::parse(&"x".repeat(5001)),
            Err(ValidationError::TooLong {
                field: "body",
                max: 5000,
                got: 5001
            })
        );
    }

    #[test]
    fn a_blank_subject_is_no_subject_and_long_ones_are_refused() {
        assert_eq!(subject(Some("  ")), Ok(None));
        assert_eq!(subject(None), Ok(None));
        assert_eq!(subject(Some(" Trip ")), Ok(Some("Trip".to_owned())));
        assert!(subject(Some(&"x".repeat(201))).is_err());
    }

    #[test]
    fn hash_matches_a_digit_and_at_matches_a_letter() {
        let ssn = p("###-##-####");
        assert!(ssn.is_found_in("My SSN is 123-45-6789."));
        assert!(!ssn.is_found_in("My SSN is 123-45-678."));
        assert!(!ssn.is_found_in("id 9123-45-67890"));
        let code = p("@@##");
        assert!(code.is_found_in("room AB12 please"));
        assert!(!code.is_found_in("room XAB12 please"));
    }

    #[test]
    fn look_alike_digits_dashes_and_spaces_do_not_slip_past() {
        let ssn = p("###-##-####");
        assert!(
            ssn.is_found_in("ssn １２３-４５-６７８９"),
            "full-width digits"
        );
        assert!(
            ssn.is_found_in("ssn 123\u{2011}45\u{2011}6789"),
            "non-breaking hyphens"
        );
        assert!(ssn.is_found_in("ssn 123–45—6789"), "en and em dashes");
        assert!(
            p("### ####").is_found_in("call 555\u{a0}1234"),
            "a non-breaking space"
        );
        assert!(!ssn.is_found_in("ssn 123.45.6789"), "a dot is not a dash");
    }

    #[test]
    fn invisible_characters_inside_a_match_do_not_slip_past() {
        let ssn = p("###-##-####");
        assert!(
            ssn.is_found_in("ssn 123\u{200b}-45-6789"),
            "a zero-width space"
        );
        assert!(
            ssn.is_found_in("ssn 123-45-678\u{200d}9"),
            "a zero-width joiner"
        );
        assert!(
            ssn.is_found_in("ssn \u{feff}123-45-6789"),
            "a byte-order mark"
        );
        assert!(
            p("password").is_found_in("my pass\u{ad}word"),
            "a soft hyphen"
        );
        assert!(
            !ssn.is_found_in("ssn 123-45-67890\u{200b}1"),
            "a longer number stays a longer number"
        );
        assert!(
            ssn.is_found_in("ssn 123-4\u{fe0f}5-6789"),
            "a variation selector"
        );
        assert!(
            ssn.is_found_in("ssn 123-45-\u{e0020}6789"),
            "a tag character"
        );
        assert!(
            ssn.is_found_in("ssn 123\u{61c}-45-6789"),
            "the Arabic letter mark"
        );
    }

    #[test]
    fn literals_match_ignoring_case() {
        assert!(p("Password").is_found_in("my PASSWORD is"));
        assert!(p("ÉCOLE").is_found_in("l'école"));
    }

    #[test]
    fn invalid_patterns_are_refused() {
        assert!(BlockedPattern::parse("  ").is_err());
        assert!(BlockedPattern::parse(&"#".repeat(101)).is_err());
        assert!(BlockedPattern::parse("a\u{0}b").is_err());
    }

    #[test]
    fn the_guard_reports_the_first_pattern_found() {
        let patterns = vec![p("secret"), p("###-##-####")];
        assert_eq!(
            first_blocked(&patterns, &["hi", "ssn 111-22-3333"]).map(BlockedPattern::as_str),
            Some("###-##-####")
        );
        assert_eq!(first_blocked(&patterns, &["hello"]), None);
    }
}
