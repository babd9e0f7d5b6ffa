//! How oversight's text search compares text: ignoring case and accents in any
//! alphabet, so a records officer typing `angela` finds `Ángela`, `ÉCOLE` finds
//! `école` and `ΣΧΟΛΕΙΟ` finds `σχολείο`.
//!
//! Neither engine does this by itself: SQLite's `LIKE` folds ASCII letters only, and
//! PostgreSQL's `ILIKE` folds by the database's collation (ASCII only under `C`) and
//! never drops accents. So the read models keep, beside a text that is not plain ASCII,
//! its [`folded`] copy, and a search compares the query's [`pattern`] with that copy
//! when there is one and with the text itself otherwise (plain ASCII, which `LIKE` /
//! `ILIKE` already compare without case). Keeping no copy of ASCII text, most of any
//! log, keeps replays as fast as before.

use crate::db::contains_pattern;
use unicode_normalization::UnicodeNormalization;

/// The copy of `text` that searches compare, or `None` when `text` is plain ASCII
/// (searched as it is). Lower case, and accents of the Latin, Greek and Cyrillic
/// alphabets removed (the combining diacritical marks, U+0300–U+036F, after canonical
/// decomposition, and the few Latin letters with a stroke or ligature, such as `đ`, `ł`,
/// `ø`, `ß`, `æ`, spelled in plain letters); the marks of other scripts (Devanagari's
/// vowel signs, say) are letters of their words and are kept.
pub fn folded(text: &str) -> Option<String> {
    (!text.is_ascii()).then(|| fold(text))
}

/// The `LIKE … ESCAPE '\'` pattern finding `query` anywhere in a text or its
/// [`folded`] copy.
pub fn pattern(query: &str) -> String {
    contains_pattern(&fold(query))
}

fn fold(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    for c in text
        .to_lowercase()
        .nfd()
        .filter(|c| !('\u{0300}'..='\u{036F}').contains(c))
        .nfc()
    {
        match c {
            // Greek's word-final sigma is the same letter: `ΕΚΔΡΟΜΈΣ` folds as
            // `εκδρομεσ`, so a search typed mid-word still finds it.
            'ς' => folded.push('σ'),
            // Latin letters whose mark is part of the letter in Unicode (no
            // decomposition), as a keyboard without them types them: `dang` finds
            // `Đặng`, `lodz` finds `Łódź`, `oresund` finds `Øresund`.
            'đ' | 'ð' => folded.push('d'),
            'ł' => folded.push('l'),
            'ø' => folded.push('o'),
            'ı' => folded.push('i'),
            'ħ' => folded.push('h'),
            'ß' => folded.push_str("ss"),
            'æ' => folded.push_str("ae"),
            'œ' => folded.push_str("oe"),
            'þ' => folded.push_str("th"),
            c => folded.push(c),
        }
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ascii_keeps_no_copy() {
        assert_eq!(folded("Field trip on Friday"), None);
    }

    #[test]
    fn case_and_accents_fold_in_every_alphabet() {
        assert_eq!(folded("Ángela Núñez").as_deref(), Some("angela nunez"));
        assert_eq!(
            folded("RÉUNION à l'ÉCOLE").as_deref(),
            Some("reunion a l'ecole")
        );
        assert_eq!(folded("ΣΧΟΛΕΊΟ").as_deref(), Some("σχολειο"));
        assert_eq!(folded("ΕΚΔΡΟΜΈΣ").as_deref(), Some("εκδρομεσ"));
        assert_eq!(folded("Школа Йошкар").as_deref(), Some("школа иошкар"));
        assert_eq!(folded("Zoë ÅNGSTRÖM").as_deref(), Some("zoe angstrom"));
    }

    #[test]
    fn latin_letters_with_a_stroke_fold_to_their_base_letter() {
        assert_eq!(folded("Đặng Łódź").as_deref(), Some("dang lodz"));
        assert_eq!(folded("Øresund Straße").as_deref(), Some("oresund strasse"));
        assert_eq!(folded("IŞIK Işık").as_deref(), Some("isik isik"));
        assert_eq!(folded("Æsir Œuvre").as_deref(), Some("aesir oeuvre"));
    }

    #[test]
    fn marks_that_are_letters_of_their_script_stay() {
        assert_eq!(folded("किताब").as_deref(), Some("किताब"));
        assert_eq!(folded("Tiếng Việt").as_deref(), Some("tieng viet"));
    }

    #[test]
    fn a_query_folds_the_same_way_and_keeps_wildcards_literal() {
        assert_eq!(pattern("ÁNGELA"), "%angela%");
        assert_eq!(pattern("100%_É"), "%100\\%\\_e%");
        assert_eq!(pattern("Gus"), "%gus%");
    }
}
