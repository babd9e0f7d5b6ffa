//! The SMS text rules: how a text is encoded and counted in segments (the "character
//! counter" a sender sees before sending), the label that leads a text to a phone shared
//! by several people, and the keywords (STOP, START, HELP) an inbound text may be.
//!
//! - [`measure`] gives a text's [`SmsEncoding`], its length in that encoding's units and
//!   its segment count ([`SmsMeasure`]); `POST /v1/preview` reports the last two.
//! - [`label_for_shared_phone`] puts `For Dennis: ` before a text.
//! - [`signed_by`] signs a family member's text relayed from the school's number.
//! - [`keyword`] reads an inbound text as an [`InboundKeyword`], if it is one.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::values::SendAs;

/// Characters in one GSM-7 segment when the text fits in one.
pub const GSM7_SINGLE: usize = 160;
/// Characters per segment of a concatenated GSM-7 text (the rest is the UDH header).
pub const GSM7_CONCATENATED: usize = 153;
/// UTF-16 units in one UCS-2 segment when the text fits in one.
pub const UCS2_SINGLE: usize = 70;
/// UTF-16 units per segment of a concatenated UCS-2 text.
pub const UCS2_CONCATENATED: usize = 67;

/// How a text travels over the air: carriers bill and split by it, so the sender is
/// shown which one a text needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum SmsEncoding {
    /// The GSM 03.38 7-bit alphabet (with its extension table): 160 per segment.
    #[serde(rename = "GSM-7")]
    Gsm7,
    /// UCS-2 (UTF-16 units), for any text with a character outside GSM-7: 70 per segment.
    #[serde(rename = "UCS-2")]
    Ucs2,
}

impl SmsEncoding {
    /// The name shown to senders and used in the API: `GSM-7` or `UCS-2`.
    pub fn as_str(self) -> &'static str {
        match self {
            SmsEncoding::Gsm7 => "GSM-7",
            SmsEncoding::Ucs2 => "UCS-2",
        }
    }

    /// Units in one segment when the whole text fits in one.
    fn single(self) -> usize {
        match self {
            SmsEncoding::Gsm7 => GSM7_SINGLE,
            SmsEncoding::Ucs2 => UCS2_SINGLE,
        }
    }

    /// Units per segment of a concatenated text.
    fn concatenated(self) -> usize {
        match self {
            SmsEncoding::Gsm7 => GSM7_CONCATENATED,
            SmsEncoding::Ucs2 => UCS2_CONCATENATED,
        }
    }

    /// Units `c` takes in this encoding (septets for GSM-7, UTF-16 units for UCS-2).
    fn units_of(self, c: char) -> usize {
        match self {
            SmsEncoding::Gsm7 if is_gsm7_extension(c) => 2,
            SmsEncoding::Gsm7 => 1,
            SmsEncoding::Ucs2 => c.len_utf16(),
        }
    }
}

impl fmt::Display for SmsEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a text costs as an SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SmsMeasure {
    /// The encoding the text needs.
    pub encoding: SmsEncoding,
    /// Its length in that encoding's units: septets for GSM-7 (an extension character
    /// counts two), UTF-16 code units for UCS-2 (an emoji counts two).
    pub units: usize,
    /// How many segments it is sent (and billed) as; an empty text is one.
    pub segments: usize,
}

/// The GSM 03.38 basic character set, in table order (less 0x1B, the escape to the
/// extension table, which is no character of its own).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// The GSM 03.38 extension table: each is sent as an escape plus one septet.
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

fn is_gsm7_basic(c: char) -> bool {
    GSM7_BASIC.contains(c)
}

fn is_gsm7_extension(c: char) -> bool {
    GSM7_EXTENSION.contains(c)
}

/// The encoding `text` needs: GSM-7 when every character is in the GSM 03.38 basic set
/// or its extension table, otherwise UCS-2.
pub fn encoding_of(text: &str) -> SmsEncoding {
    if text
        .chars()
        .all(|c| is_gsm7_basic(c) || is_gsm7_extension(c))
    {
        SmsEncoding::Gsm7
    } else {
        SmsEncoding::Ucs2
    }
}

/// Encoding, length and segment count of `text`.
///
/// A text that fits one segment (160 GSM-7 septets, 70 UCS-2 units) is one; a longer
/// one is split into segments of 153 or 67, and a character is never split across two
/// segments (an extension character's two septets, an emoji's two UTF-16 units), so a
/// segment ending on half of one carries one unit less.
///
/// ```
/// use homeroom_domain::sms::{measure, SmsEncoding};
/// let m = measure("See you at 6pm {Gym}");
/// assert_eq!((m.encoding, m.units, m.segments), (SmsEncoding::Gsm7, 22, 1));
/// assert_eq!(measure("Café ☕").encoding, SmsEncoding::Ucs2);
/// ```
pub fn measure(text: &str) -> SmsMeasure {
    let encoding = encoding_of(text);
    let units: usize = text.chars().map(|c| encoding.units_of(c)).sum();
    let segments = if units <= encoding.single() {
        1
    } else {
        let limit = encoding.concatenated();
        let (full, used) = text.chars().fold((0usize, 0usize), |(full, used), c| {
            let cost = encoding.units_of(c);
            if used + cost > limit {
                (full + 1, cost)
            } else {
                (full, used + cost)
            }
        });
        full + usize::from(used > 0)
    };
    SmsMeasure {
        encoding,
        units,
        segments,
    }
}

/// The longest text one SMS may carry, in characters: providers refuse longer ones
/// (Twilio's error 21617), so such a text cannot go by SMS at all (a delivery of it fails
/// on our side and falls back to the other channel).
pub const MAX_SMS_CHARS: usize = 1600;

/// Whether `text` is longer than one SMS may be ([`MAX_SMS_CHARS`]), so the sender is
/// told before sending (`POST /v1/preview`).
///
/// ```
/// use homeroom_domain::sms::too_long_for_sms;
/// assert!(!too_long_for_sms(&"a".repeat(1600)));
/// assert!(too_long_for_sms(&"é".repeat(1601)));
/// ```
pub fn too_long_for_sms(text: &str) -> bool {
    text.chars().count() > MAX_SMS_CHARS
}

/// The first name in a display name: its first word (`"Dennis Ortiz"` → `"Dennis"`).
fn first_name(display_name: &str) -> Option<&str> {
    display_name.split_whitespace().next()
}

/// `text` led by a short label naming its recipient, `For Dennis: …` (the first word
/// of `display_name`), for a phone number several people of the district share, so the
/// family knows whom a text is about. A blank name leaves the text as it is.
///
/// ```
/// use homeroom_domain::sms::label_for_shared_phone;
/// assert_eq!(label_for_shared_phone("No school Friday", "Dennis Ortiz"), "For Dennis: No school Friday");
/// ```
pub fn label_for_shared_phone(text: &str, display_name: &str) -> String {
    match first_name(display_name) {
        Some(name) => format!("For {name}: {text}"),
        None => text.to_owned(),
    }
}

/// `text` signed with its author's name on a line of its own (`…\n- Ned Flanders`),
/// where [`is_signed`] says so: a staff member's own message, so the family knows who
/// texts them; a family member's or student's text relayed to the others of a group
/// from the school's number (or the starter's), so the families do not read a parent's
/// words as the school's and can tell two parents apart. At the end, in GSM-7
/// characters, so a shared phone's `For Dennis: ` label still leads and the signature
/// costs no change of encoding. A blank name leaves the text as it is.
///
/// ```
/// use homeroom_domain::sms::signed_by;
/// assert_eq!(signed_by("I can bring cookies", "Ned Flanders"), "I can bring cookies\n- Ned Flanders");
/// ```
pub fn signed_by(text: &str, author_name: &str) -> String {
    match author_name.trim() {
        "" => text.to_owned(),
        name => format!("{text}\n- {name}"),
    }
}

/// Whether an SMS ends with its author's signature ([`signed_by`]), from who wrote it
/// and under whose identity: a staff member writing from their own identity signs with
/// their name (DESIGN.md: a personal message "shows the sender's own name and
/// signature", and the family's phone shows only a number they may not know), and a
/// family member's or student's words relayed to the others are signed with theirs. A
/// message from the school's identity comes from the school's number, unsigned.
///
/// ```
/// use homeroom_domain::{sms::is_signed, SendAs};
/// assert!(is_signed(true, Some(SendAs::Personal)));
/// assert!(!is_signed(true, Some(SendAs::School)));
/// assert!(is_signed(false, Some(SendAs::Personal)));
/// ```
pub fn is_signed(author_is_staff: bool, sent_as: Option<SendAs>) -> bool {
    !author_is_staff || sent_as == Some(SendAs::Personal)
}

/// A text as sent without the signature [`signed_by`] put after it for `author_name`,
/// for views that show the author's name beside the text already. A text with no such
/// signature is returned whole.
pub fn without_signature<'a>(sent: &'a str, author_name: &str) -> &'a str {
    match author_name.trim() {
        "" => sent,
        name => sent
            .strip_suffix(name)
            .and_then(|rest| rest.strip_suffix("\n- "))
            .unwrap_or(sent),
    }
}

/// A text as its recipient reads it in their own views: as sent, without the shared
/// phone's label for them ([`without_shared_phone_label`]) and without the author's
/// signature ([`without_signature`]), which the views show apart.
pub fn own_copy<'a>(sent: &'a str, recipient_name: &str, author_name: &str) -> &'a str {
    without_signature(
        without_shared_phone_label(sent, recipient_name),
        author_name,
    )
}

/// A text as sent without the label [`label_for_shared_phone`] put in front of it for
/// `display_name`, for views that show the person their own copy (the label was for the
/// phone's other users). A text with no such label is returned whole.
pub fn without_shared_phone_label<'a>(sent: &'a str, display_name: &str) -> &'a str {
    first_name(display_name)
        .and_then(|name| sent.strip_prefix(&format!("For {name}: ")))
        .unwrap_or(sent)
}

/// A keyword an inbound text may be, with the meaning carriers and Twilio give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum InboundKeyword {
    /// Opt out: no more texts from that number (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END,
    /// QUIT, and REVOKE and OPTOUT, which Twilio also treats as opt-outs).
    Stop,
    /// Opt back in (START, YES, UNSTOP).
    Start,
    /// Ask who is texting and how to stop (HELP, INFO).
    Help,
}

const STOP_WORDS: [&str; 8] = [
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
];
const START_WORDS: [&str; 3] = ["START", "YES", "UNSTOP"];
const HELP_WORDS: [&str; 2] = ["HELP", "INFO"];

/// Opt-outs written as a few words rather than one: what families type to be left alone
/// ("opt out" is one of the words the FCC's 2024 consent rule names; "stop all" is the
/// carriers'). Matched as the whole message, "please" aside.
const STOP_PHRASES: [&str; 12] = [
    "STOP ALL",
    "OPT OUT",
    "STOP TEXTING",
    "STOP TEXTING ME",
    "STOP TEXTING US",
    "STOP MESSAGING",
    "STOP MESSAGING ME",
    "STOP SENDING",
    "STOP SENDING TEXTS",
    "STOP SENDING MESSAGES",
    "STOP THE TEXTS",
    "NO MORE TEXTS",
];

/// The keyword `body` is, if the whole message is one: case-insensitive, with
/// whitespace, punctuation, symbols and the word "please" ignored (`" Stop. "` and
/// `"Stop please"` are STOP). A few-word opt-out is STOP too (`"opt out"`, `"stop
/// texting me"`); anything more is a reply (`"stop by the office"`).
///
/// ```
/// use homeroom_domain::sms::{keyword, InboundKeyword};
/// assert_eq!(keyword("  unsubscribe! "), Some(InboundKeyword::Stop));
/// assert_eq!(keyword("Please stop texting me."), Some(InboundKeyword::Stop));
/// assert_eq!(keyword("Yes, see you then"), None);
/// ```
pub fn keyword(body: &str) -> Option<InboundKeyword> {
    let words: Vec<String> = body
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !w.eq_ignore_ascii_case("please"))
        .map(str::to_uppercase)
        .collect();
    let text = words.join(" ");
    let is = |words: &[&str]| words.iter().any(|w| *w == text);
    if is(&STOP_WORDS) || is(&STOP_PHRASES) {
        Some(InboundKeyword::Stop)
    } else if is(&START_WORDS) {
        Some(InboundKeyword::Start)
    } else if is(&HELP_WORDS) {
        Some(InboundKeyword::Help)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` copies of `c`.
    fn chars(c: char, n: usize) -> String {
        std::iter::repeat_n(c, n).collect()
    }

    #[track_caller]
    fn assert_measure(text: &str, encoding: SmsEncoding, units: usize, segments: usize) {
        assert_eq!(
            measure(text),
            SmsMeasure {
                encoding,
                units,
                segments
            },
            "measuring {text:?}"
        );
    }

    // ---- encoding ---------------------------------------------------------------------

    #[test]
    fn a_text_of_gsm_basic_characters_is_gsm7() {
        // given letters, digits, accented GSM letters, Greek capitals, symbols and line
        // breaks of the basic set
        let text = "Hello Ñoño! @ £5, ¥3 & $2 ΔΦΓ §¿¡ äöüà\r\n";
        // then
        assert_eq!(encoding_of(text), SmsEncoding::Gsm7);
    }

    #[test]
    fn every_character_of_the_gsm_tables_is_gsm7() {
        assert_eq!(GSM7_BASIC.chars().count(), 127);
        assert_eq!(GSM7_EXTENSION.chars().count(), 10);
        assert_eq!(encoding_of("\u{1b}"), SmsEncoding::Ucs2);
        assert_eq!(encoding_of(GSM7_BASIC), SmsEncoding::Gsm7);
        assert_eq!(encoding_of(GSM7_EXTENSION), SmsEncoding::Gsm7);
    }

    #[test]
    fn extension_characters_stay_gsm7_and_count_two_septets() {
        for c in ['{', '}', '[', ']', '~', '\\', '|', '^', '€'] {
            assert_measure(&c.to_string(), SmsEncoding::Gsm7, 2, 1);
        }
    }

    #[test]
    fn one_character_outside_gsm_makes_the_whole_text_ucs2() {
        // given a GSM text with one character that GSM lacks (a lowercase ç, a curly
        // quote, a CJK character)
        for text in ["ça va", "It’s on", "Hi 你好"] {
            // then
            assert_eq!(encoding_of(text), SmsEncoding::Ucs2, "{text:?}");
        }
    }

    #[test]
    fn encodings_display_and_deserialise_with_their_api_names() {
        use serde::de::{value::Error, value::StrDeserializer, IntoDeserializer};
        let parse = |name: &str| {
            let de: StrDeserializer<'_, Error> = name.into_deserializer();
            SmsEncoding::deserialize(de)
        };
        assert_eq!(SmsEncoding::Gsm7.to_string(), "GSM-7");
        assert_eq!(SmsEncoding::Ucs2.to_string(), "UCS-2");
        assert_eq!(parse("GSM-7"), Ok(SmsEncoding::Gsm7));
        assert_eq!(parse("UCS-2"), Ok(SmsEncoding::Ucs2));
        assert!(parse("Gsm7").is_err());
    }

    // ---- segments ---------------------------------------------------------------------

    #[test]
    fn an_empty_text_is_one_gsm7_segment() {
        assert_measure("", SmsEncoding::Gsm7, 0, 1);
    }

    #[test]
    fn a_gsm7_text_of_160_characters_is_one_segment() {
        assert_measure(&chars('a', 160), SmsEncoding::Gsm7, 160, 1);
    }

    #[test]
    fn a_gsm7_text_of_161_characters_is_two_segments_of_153() {
        assert_measure(&chars('a', 161), SmsEncoding::Gsm7, 161, 2);
        assert_measure(&chars('a', 306), SmsEncoding::Gsm7, 306, 2);
        assert_measure(&chars('a', 307), SmsEncoding::Gsm7, 307, 3);
    }

    #[test]
    fn an_extension_character_that_crosses_160_septets_makes_two_segments() {
        // given 159 letters and a euro sign: 161 septets
        let text = format!("{}€", chars('a', 159));
        // then it no longer fits one segment
        assert_measure(&text, SmsEncoding::Gsm7, 161, 2);
        // while 158 letters and a euro sign (160 septets) still do
        assert_measure(&format!("{}€", chars('a', 158)), SmsEncoding::Gsm7, 160, 1);
    }

    #[test]
    fn an_extension_character_is_never_split_across_segments() {
        // given 306 septets where the euro sign would straddle the end of segment one
        let text = format!("{}€{}", chars('a', 152), chars('a', 152));
        // then the euro sign moves whole into segment two, and a third is needed
        assert_measure(&text, SmsEncoding::Gsm7, 306, 3);
        // while the same septets with the euro sign inside segment one fit two
        let inside = format!("{}€{}", chars('a', 151), chars('a', 153));
        assert_measure(&inside, SmsEncoding::Gsm7, 306, 2);
    }

    #[test]
    fn a_ucs2_text_of_70_units_is_one_segment() {
        assert_measure(&chars('你', 70), SmsEncoding::Ucs2, 70, 1);
    }

    #[test]
    fn a_ucs2_text_of_71_units_is_two_segments_of_67() {
        assert_measure(&chars('你', 71), SmsEncoding::Ucs2, 71, 2);
        assert_measure(&chars('你', 134), SmsEncoding::Ucs2, 134, 2);
        assert_measure(&chars('你', 135), SmsEncoding::Ucs2, 135, 3);
    }

    #[test]
    fn an_emoji_counts_two_utf16_units() {
        // given 68 GSM letters and one emoji: 70 UTF-16 units
        let text = format!("{}😀", chars('a', 68));
        assert_measure(&text, SmsEncoding::Ucs2, 70, 1);
        // one letter more is 71 units: two segments
        assert_measure(&format!("{}😀", chars('a', 69)), SmsEncoding::Ucs2, 71, 2);
    }

    #[test]
    fn an_emoji_is_never_split_across_segments() {
        // given 134 units where the emoji would straddle the end of segment one
        let text = format!("{}😀{}", chars('a', 66), chars('a', 66));
        assert_measure(&text, SmsEncoding::Ucs2, 134, 3);
        let inside = format!("{}😀{}", chars('a', 65), chars('a', 67));
        assert_measure(&inside, SmsEncoding::Ucs2, 134, 2);
    }

    // ---- the shared-phone label ---------------------------------------------------------

    #[test]
    fn a_text_to_a_shared_phone_leads_with_the_recipients_first_name() {
        assert_eq!(
            label_for_shared_phone("Dennis was absent today.", "Dennis Ortiz"),
            "For Dennis: Dennis was absent today."
        );
    }

    #[test]
    fn the_label_uses_the_first_word_of_the_name_however_it_is_spaced() {
        assert_eq!(
            label_for_shared_phone("Hi", "  Mary-Jane   van Dyke "),
            "For Mary-Jane: Hi"
        );
        assert_eq!(label_for_shared_phone("Hi", "Cher"), "For Cher: Hi");
    }

    #[test]
    fn a_label_comes_off_for_its_own_name_only() {
        let sent = label_for_shared_phone("Excursión", "Gail Guardian");
        assert_eq!(
            without_shared_phone_label(&sent, "Gail Guardian"),
            "Excursión"
        );
        assert_eq!(without_shared_phone_label(&sent, "Gus Guardian"), sent);
        assert_eq!(without_shared_phone_label("Excursión", "Gail"), "Excursión");
        assert_eq!(without_shared_phone_label(&sent, ""), sent);
    }

    #[test]
    fn a_blank_name_leaves_the_text_unlabelled() {
        assert_eq!(label_for_shared_phone("Hi", "   "), "Hi");
    }

    #[test]
    fn the_label_counts_toward_the_segments() {
        // given a text of exactly 160 septets
        let text = chars('a', 160);
        // when it is labelled for a shared phone
        let labelled = label_for_shared_phone(&text, "Dennis Ortiz");
        // then it needs two segments
        assert_eq!(measure(&labelled).segments, 2);
    }

    // ---- labels and signatures ----------------------------------------------------------

    #[test]
    fn the_own_copy_of_a_text_has_neither_label_nor_signature() {
        let sent = label_for_shared_phone(&signed_by("Cookies?", "Ned Flanders"), "Marge Simpson");
        assert_eq!(sent, "For Marge: Cookies?\n- Ned Flanders");
        assert_eq!(own_copy(&sent, "Marge Simpson", "Ned Flanders"), "Cookies?");
        assert_eq!(
            own_copy("Bring:\n- Ned Flanders", "Marge Simpson", "Someone Else"),
            "Bring:\n- Ned Flanders",
            "another's name is text, not a signature"
        );
        assert_eq!(own_copy("Cookies?", "", ""), "Cookies?");
    }

    // ---- keywords -----------------------------------------------------------------------

    #[test]
    fn every_opt_out_word_is_stop() {
        for word in STOP_WORDS {
            assert_eq!(keyword(word), Some(InboundKeyword::Stop), "{word}");
        }
    }

    #[test]
    fn every_opt_in_word_is_start() {
        for word in ["START", "YES", "UNSTOP"] {
            assert_eq!(keyword(word), Some(InboundKeyword::Start), "{word}");
        }
    }

    #[test]
    fn help_and_info_are_help() {
        assert_eq!(keyword("HELP"), Some(InboundKeyword::Help));
        assert_eq!(keyword("INFO"), Some(InboundKeyword::Help));
    }

    #[test]
    fn keywords_ignore_case_and_surrounding_whitespace_and_punctuation() {
        for body in [
            "stop",
            "Stop",
            " STOP ",
            "\nstop.\n",
            "STOP!!",
            "\"Stop\"",
            "¡stop!",
        ] {
            assert_eq!(keyword(body), Some(InboundKeyword::Stop), "{body:?}");
        }
        assert_eq!(keyword("yes!"), Some(InboundKeyword::Start));
        assert_eq!(keyword("Help?"), Some(InboundKeyword::Help));
    }

    #[test]
    fn a_few_word_opt_out_is_stop() {
        for body in [
            "stop all",
            "STOP ALL",
            "opt out",
            "Opt-out",
            "Stop please",
            "please STOP",
            "Stop texting me",
            "Please stop texting me.",
            "no more texts!",
        ] {
            assert_eq!(keyword(body), Some(InboundKeyword::Stop), "{body:?}");
        }
    }

    #[test]
    fn a_keyword_must_be_the_whole_message() {
        for body in [
            "Yes, see you then",
            "help me with homework",
            "stop by the office tomorrow",
            "Can you stop texting me at work and call instead?",
            "end of the day pickup",
            "please",
        ] {
            assert_eq!(keyword(body), None, "{body:?}");
        }
    }

    #[test]
    fn a_word_merely_containing_a_keyword_is_no_keyword() {
        for body in [
            "stopped",
            "ending",
            "yesterday",
            "information",
            "",
            "  ",
            "?!",
        ] {
            assert_eq!(keyword(body), None, "{body:?}");
        }
    }
}
