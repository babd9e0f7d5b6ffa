//! The providers of the embedded default: nothing leaves the machine, every delivery is
//! recorded as delivered, and what "was sent" can be looked at (tests, demos).

use crate::{
    EmailSender, Handover, OutboundEmail, OutboundSms, SmsSender, TranslateError, Translation,
    Translator,
};
use async_trait::async_trait;
use std::sync::Mutex;

/// Records every SMS and email handed to it and reports each as delivered.
#[derive(Debug, Default)]
pub struct Sandbox {
    sms: Mutex<Vec<OutboundSms>>,
    email: Mutex<Vec<OutboundEmail>>,
}

impl Sandbox {
    /// An empty sandbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every SMS handed over so far, in order.
    pub fn sent_sms(&self) -> Vec<OutboundSms> {
        self.sms.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every email handed over so far, in order.
    pub fn sent_email(&self) -> Vec<OutboundEmail> {
        self.email.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl SmsSender for Sandbox {
    async fn send_sms(&self, sms: &OutboundSms) -> Result<Handover, crate::ChannelError> {
        self.sms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sms.clone());
        Ok(Handover::Delivered {
            provider_message_id: Some(format!("sandbox-{}", sms.key.as_header_value())),
        })
    }
}

#[async_trait]
impl EmailSender for Sandbox {
    async fn send_email(&self, email: &OutboundEmail) -> Result<Handover, crate::ChannelError> {
        self.email
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(email.clone());
        Ok(Handover::Delivered {
            provider_message_id: Some(format!("sandbox-{}", email.key.as_header_value())),
        })
    }
}

/// Translates nothing: answers the original, marked untranslated.
#[derive(Debug, Default, Clone, Copy)]
pub struct Untranslated;

#[async_trait]
impl Translator for Untranslated {
    async fn translate(
        &self,
        text: &str,
        from: &str,
        _to: &str,
    ) -> Result<Translation, TranslateError> {
        Ok(Translation {
            text: text.to_owned(),
            language: from.to_owned(),
            machine_translated: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AttemptKey;
    use homeroom_domain::DeliveryId;

    #[tokio::test]
    async fn the_sandbox_keeps_what_it_was_given_and_reports_it_delivered() {
        let sandbox = Sandbox::new();
        let sms = OutboundSms {
            key: AttemptKey {
                delivery_id: DeliveryId::new(uuid::Uuid::from_u128(7)),
                attempt: 1,
            },
            from: "+15550001000".into(),
            to: "+15550002000".into(),
            body: "Hi".into(),
            status_callback: None,
        };
        let handed = sandbox.send_sms(&sms).await.unwrap();
        assert!(matches!(handed, Handover::Delivered { .. }));
        assert_eq!(sandbox.sent_sms(), vec![sms]);
        assert!(sandbox.sent_email().is_empty());
    }

    #[tokio::test]
    async fn the_untranslated_translator_never_invents_a_translation() {
        let t = Untranslated.translate("Hola", "es", "en").await.unwrap();
        assert_eq!(t.text, "Hola");
        assert_eq!(t.language, "es");
        assert!(!t.machine_translated);
    }
}
