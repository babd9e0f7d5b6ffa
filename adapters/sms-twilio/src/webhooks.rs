//! Twilio's webhooks through the [`SmsWebhooks`] port: `X-Twilio-Signature`, the
//! status-callback and inbound-message forms, and TwiML answers.

use crate::{signature, status::StatusCallback};
use homeroom_channels::webhooks::{
    FormField, ProviderInbound, ProviderStatus, SmsWebhooks, WebhookError,
};

/// Twilio's webhooks of one account.
#[derive(Clone)]
pub struct TwilioWebhooks {
    auth_token: String,
}

impl std::fmt::Debug for TwilioWebhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TwilioWebhooks(..)")
    }
}

impl TwilioWebhooks {
    /// Webhooks signed with the account's auth token.
    pub fn new(auth_token: impl Into<String>) -> Self {
        Self {
            auth_token: auth_token.into(),
        }
    }
}

fn field<'f>(form: &'f [FormField], name: &'static str) -> Result<&'f str, WebhookError> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.trim().is_empty())
        .ok_or(WebhookError::Field { field: name })
}

/// Escapes text for an XML element.
fn xml_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl SmsWebhooks for TwilioWebhooks {
    fn verify(&self, full_url: &str, form: &[FormField], header: &str) -> bool {
        signature::verify(&self.auth_token, full_url, form, header)
    }

    fn signature_header(&self) -> &'static str {
        signature::SIGNATURE_HEADER
    }

    fn status(&self, form: &[FormField]) -> Result<ProviderStatus, WebhookError> {
        let callback = StatusCallback::from_form(form).map_err(|e| WebhookError::Field {
            field: match e {
                crate::status::CallbackError::Missing(name) => name,
                crate::status::CallbackError::UnknownStatus(_) => "MessageStatus",
                crate::status::CallbackError::BadErrorCode(_) => "ErrorCode",
            },
        })?;
        Ok(ProviderStatus {
            outcome: callback.outcome(),
            permanent: callback.permanent(),
            error: callback.error(),
            provider_message_id: callback.message_sid,
        })
    }

    fn inbound(&self, form: &[FormField]) -> Result<ProviderInbound, WebhookError> {
        Ok(ProviderInbound {
            message_sid: field(form, "MessageSid")?.to_owned(),
            from: field(form, "From")?.to_owned(),
            to: field(form, "To")?.to_owned(),
            // An empty text (a picture only) is still a text that arrived.
            body: form
                .iter()
                .find(|(k, _)| k == "Body")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            media_urls: media_urls(form),
        })
    }

    fn answer(&self, reply: Option<&str>) -> (&'static str, String) {
        let body = match reply {
            Some(text) => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>{}</Message></Response>",
                xml_text(text)
            ),
            None => "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>".to_owned(),
        };
        ("text/xml; charset=utf-8", body)
    }
}

/// The pictures or files of an MMS: `MediaUrl0`, `MediaUrl1`, … up to `NumMedia`, in
/// order. A count Twilio did not send, or one past the URLs it did, reads the URLs that
/// are there.
fn media_urls(form: &[FormField]) -> Vec<String> {
    let count = form
        .iter()
        .find(|(k, _)| k == "NumMedia")
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    (0..count.unwrap_or(usize::MAX))
        .map_while(|i| {
            let name = format!("MediaUrl{i}");
            form.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<FormField> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_signed_form_verifies_and_a_changed_one_does_not() {
        let hooks = TwilioWebhooks::new("secret");
        let url = "https://example.org/v1/webhooks/twilio/inbound";
        let f = form(&[
            ("From", "+15550002003"),
            ("To", "+15550001000"),
            ("Body", "hi"),
            ("MessageSid", "SM1"),
        ]);
        let sig = signature::signature("secret", url, &f);
        assert!(hooks.verify(url, &f, &sig));
        let mut changed = f.clone();
        changed[2].1 = "bye".into();
        assert!(!hooks.verify(url, &changed, &sig));
        assert!(!hooks.verify("https://example.org/elsewhere", &f, &sig));
    }

    #[test]
    fn an_inbound_form_reads_its_four_fields() {
        let hooks = TwilioWebhooks::new("secret");
        let read = hooks
            .inbound(&form(&[
                ("From", "+1555"),
                ("To", "+1666"),
                ("Body", "Thanks"),
                ("MessageSid", "SM9"),
            ]))
            .unwrap();
        assert_eq!(
            (
                read.message_sid.as_str(),
                read.from.as_str(),
                read.to.as_str(),
                read.body.as_str()
            ),
            ("SM9", "+1555", "+1666", "Thanks")
        );
        assert_eq!(
            hooks.inbound(&form(&[("From", "+1555")])),
            Err(WebhookError::Field {
                field: "MessageSid"
            })
        );
    }

    #[test]
    fn a_failed_status_reads_as_a_permanent_failure_for_a_permanent_code() {
        let hooks = TwilioWebhooks::new("secret");
        let status = hooks
            .status(&form(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", "undelivered"),
                ("ErrorCode", "30005"),
            ]))
            .unwrap();
        assert_eq!(status.outcome, Some(homeroom_domain::OutcomeStatus::Failed));
        assert!(status.permanent);
        assert_eq!(
            status.error.as_deref(),
            Some("undelivered (30005): Unknown destination handset (the number does not exist)")
        );
        let unsubscribed = hooks
            .status(&form(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", "undelivered"),
                ("ErrorCode", "21610"),
            ]))
            .unwrap();
        assert_eq!(
            unsubscribed.outcome,
            Some(homeroom_domain::OutcomeStatus::Failed)
        );
        assert!(
            !unsubscribed.permanent,
            "an opt-out does not condemn the phone"
        );
        let sending = hooks
            .status(&form(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", "sending"),
            ]))
            .unwrap();
        assert_eq!(sending.outcome, None);
    }

    #[test]
    fn an_mms_reads_with_its_pictures_in_order() {
        let hooks = TwilioWebhooks::new("secret");
        let base = [
            ("MessageSid", "MM1"),
            ("From", "+15550002003"),
            ("To", "+15550001000"),
            ("Body", ""),
        ];
        let mut fields = base.to_vec();
        fields.extend([
            ("NumMedia", "2"),
            ("MediaUrl1", "https://m/second"),
            ("MediaUrl0", "https://m/first"),
        ]);
        let read = hooks.inbound(&form(&fields)).unwrap();
        assert_eq!(read.media_urls, ["https://m/first", "https://m/second"]);
        assert_eq!(read.body, "");
        let text_only = hooks.inbound(&form(&base)).unwrap();
        assert!(text_only.media_urls.is_empty());
        let mut short = base.to_vec();
        short.extend([("NumMedia", "3"), ("MediaUrl0", "https://m/only")]);
        assert_eq!(
            hooks.inbound(&form(&short)).unwrap().media_urls,
            ["https://m/only"]
        );
    }

    #[test]
    fn answers_are_twiml_with_the_reply_escaped() {
        let hooks = TwilioWebhooks::new("secret");
        let (kind, body) = hooks.answer(Some("Stop & start <now>"));
        assert!(kind.starts_with("text/xml"));
        assert!(
            body.contains("<Message>Stop &amp; start &lt;now&gt;</Message>"),
            "{body}"
        );
        assert!(hooks.answer(None).1.ends_with("<Response></Response>"));
    }
}
