//! The `X-Twilio-Signature` of a form-encoded webhook: HMAC-SHA1, keyed with the
//! account's auth token, over the full URL Twilio requested followed by every form
//! field's name and value, sorted by name; base64-encoded.
//!
//! The URL must be exactly the one Twilio was given (scheme, host, port, path and query
//! string as configured), which is why the API signs over `HOMEROOM_PUBLIC_URL` and not
//! over whatever host a proxy forwarded.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The header Twilio puts the signature in.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

fn mac<K, V>(auth_token: &str, full_url: &str, form_params: &[(K, V)]) -> Hmac<Sha1>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut params: Vec<(&str, &str)> = form_params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    // By name; a name given twice keeps its values in a fixed (sorted) order too.
    params.sort_unstable();
    // HMAC takes a key of any length, so this never fails.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(auth_token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(full_url.as_bytes());
    for (name, value) in params {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// The signature Twilio sends for a form post of `form_params` to `full_url`.
///
/// ```
/// let params = [("Digits", "1234"), ("CallSid", "CA1234567890ABCDE"), ("To", "+18005551212"),
///     ("From", "+12349013030"), ("Caller", "+12349013030")];
/// let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
/// assert_eq!(homeroom_sms_twilio::signature("12345", url, &params), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
/// ```
pub fn signature<K, V>(auth_token: &str, full_url: &str, form_params: &[(K, V)]) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    STANDARD.encode(
        mac(auth_token, full_url, form_params)
            .finalize()
            .into_bytes(),
    )
}

/// Whether `header` (the `X-Twilio-Signature` value) is Twilio's signature of this
/// request. The comparison takes the same time wherever the bytes differ; a header that
/// is not base64 is simply not the signature.
pub fn verify<K, V>(auth_token: &str, full_url: &str, form_params: &[(K, V)], header: &str) -> bool
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let Ok(claimed) = STANDARD.decode(header.trim()) else {
        return false;
    };
    mac(auth_token, full_url, form_params)
        .verify_slice(&claimed)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    /// The worked example of Twilio's "Secure webhooks" guide.
    fn docs_example() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
    }

    #[test]
    fn the_signature_matches_the_example_in_twilios_security_guide() {
        assert_eq!(
            signature(TOKEN, URL, &docs_example()),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        assert!(verify(
            TOKEN,
            URL,
            &docs_example(),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
    }

    #[test]
    fn the_signature_matches_the_vector_of_twilios_sdks() {
        let params = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ];
        assert!(verify(TOKEN, URL, &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
    }

    #[test]
    fn the_order_the_fields_arrive_in_does_not_matter() {
        let mut shuffled = docs_example();
        shuffled.reverse();
        assert!(verify(
            TOKEN,
            URL,
            &shuffled,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
    }

    #[test]
    fn a_changed_field_url_or_token_does_not_verify() {
        let good = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        let mut tampered = docs_example();
        tampered[2].1 = "9999";
        assert!(!verify(TOKEN, URL, &tampered, good));
        assert!(!verify(
            TOKEN,
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &docs_example(),
            good
        ));
        assert!(!verify("54321", URL, &docs_example(), good));
        let mut extra = docs_example();
        extra.push(("Body", "STOP"));
        assert!(!verify(TOKEN, URL, &extra, good));
    }

    #[test]
    fn a_missing_truncated_or_garbled_header_does_not_verify() {
        for header in [
            "",
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ",
            "0/KCTR6DLpKmkAf8muzZqo1nDg==",
            "not base64!",
            "AAAA",
        ] {
            assert!(!verify(TOKEN, URL, &docs_example(), header), "{header:?}");
        }
    }
}
