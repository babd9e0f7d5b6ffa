//! The delivery plan: for each recipient of a message, the channel, address, language
//! and rendered text, recorded in `MessagePosted` so the log alone explains every later
//! delivery.

use serde::{Deserialize, Serialize};

use crate::ids::{DeliveryId, PersonId, SchoolId};
use crate::person::PersonState;
use crate::values::{Channel, ContactChannel, SendAs};

/// How one message will reach one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedDelivery {
    /// `delivery_id_for(message_id, recipient_id)`, so retries converge.
    pub delivery_id: DeliveryId,
    /// Who receives it.
    pub recipient_id: PersonId,
    /// The channel chosen by [`choose_channel`].
    pub channel: Channel,
    /// The phone number or email address; `None` for in-app.
    pub address: Option<String>,
    /// The recipient's language; translation happens at delivery, the original is kept.
    pub language: String,
    /// The body with merge fields rendered for this recipient.
    pub text: String,
    /// The subject rendered for this recipient, if the message has one (email uses it).
    #[serde(default)]
    pub subject: Option<String>,
}

/// Who a delivery goes out as: the message's author and the identity they sent it
/// under, so a worker knows the sending number and name without reading the
/// conversation, and the log explains it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverySender {
    /// The message's author.
    pub author_id: PersonId,
    /// Their own identity, or the school's.
    pub sent_as: SendAs,
    /// The conversation's school (whose number and name a school message uses).
    pub school_id: SchoolId,
}

/// Picks the channel (and address) for one recipient:
///
/// 1. the channel the sender picked, if the recipient has it;
/// 2. else the recipient's preferred channel, if they have it;
/// 3. else the district default when the recipient has both SMS and email;
/// 4. else SMS for guardians (and anyone) with a phone number;
/// 5. else whatever contact point exists (email);
/// 6. else in-app.
///
/// A recipient "has" SMS or email when they have such a contact point that is not
/// marked failing (a failing one is skipped in favour of the other), and "has" the app
/// when their preferred channel is the app.
pub fn choose_channel(
    picked: Option<Channel>,
    recipient: &PersonState,
    district_default: ContactChannel,
) -> (Channel, Option<String>) {
    let usable = |channel: ContactChannel| {
        recipient
            .contact_points()
            .iter()
            .find(|cp| cp.channel == channel && !cp.failing)
            .map(|cp| cp.address.clone())
    };
    let has = |channel: Channel| match channel {
        Channel::App => (recipient.preferred_channel() == Some(Channel::App)).then_some(None),
        Channel::Sms => usable(ContactChannel::Sms).map(Some),
        Channel::Email => usable(ContactChannel::Email).map(Some),
    };
    for wanted in [picked, recipient.preferred_channel()]
        .into_iter()
        .flatten()
    {
        if let Some(address) = has(wanted) {
            return (wanted, address);
        }
    }
    match (usable(ContactChannel::Sms), usable(ContactChannel::Email)) {
        (Some(sms), Some(email)) => match district_default {
            ContactChannel::Sms => (Channel::Sms, Some(sms)),
            ContactChannel::Email => (Channel::Email, Some(email)),
        },
        // Guardians default to SMS; with only one kind of contact point, use it.
        (Some(sms), None) => (Channel::Sms, Some(sms)),
        (None, Some(email)) => (Channel::Email, Some(email)),
        (None, None) => (Channel::App, None),
    }
}

/// Whether an in-app delivery reaches `recipient`, so that handing it to their inbox
/// counts as delivered: staff (they work in Homeroom's inbox), anyone who prefers the
/// app, and anyone with a working phone or email (the app was then chosen because they
/// muted the conversation, which is done in the app). A family member or student left
/// with the app only because nothing else was (step 6 of [`choose_channel`]) would see
/// it nowhere, and the record must not say it arrived.
pub fn app_reaches(recipient: &PersonState) -> bool {
    recipient.is_staff()
        || recipient.preferred_channel() == Some(Channel::App)
        || recipient.contact_points().iter().any(|cp| !cp.failing)
}

/// When `failed` did not arrive, the same message by the recipient's other channel:
/// email falls back to SMS and SMS to email, on a contact point that is not failing
/// (the failed address is about to be marked failing). `None` when there is no other
/// channel (in-app, or a recipient with one kind of contact point), and for a delivery
/// that was itself a fallback: a message falls back once.
pub fn fallback_for(
    failed: &PlannedDelivery,
    was_fallback: bool,
    recipient: &PersonState,
    delivery_id: DeliveryId,
) -> Option<PlannedDelivery> {
    if was_fallback {
        return None;
    }
    let other = match failed.channel {
        Channel::Email => ContactChannel::Sms,
        Channel::Sms => ContactChannel::Email,
        Channel::App => return None,
    };
    let address = recipient
        .contact_points()
        .iter()
        .find(|cp| {
            cp.channel == other && !cp.failing && Some(&cp.address) != failed.address.as_ref()
        })?
        .address
        .clone();
    Some(PlannedDelivery {
        delivery_id,
        recipient_id: failed.recipient_id,
        channel: other.into(),
        address: Some(address),
        language: failed.language.clone(),
        text: failed.text.clone(),
        subject: failed.subject.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::person_with_contacts;
    use crate::values::{ContactPoint, PersonKind};

    fn sms() -> ContactPoint {
        ContactPoint {
            channel: ContactChannel::Sms,
            address: "+15550100001".to_owned(),
        }
    }

    fn email() -> ContactPoint {
        ContactPoint {
            channel: ContactChannel::Email,
            address: "pat@example.org".to_owned(),
        }
    }

    fn both(preferred: Option<Channel>) -> PersonState {
        person_with_contacts(PersonKind::Guardian, preferred, vec![sms(), email()], &[])
    }

    #[test]
    fn the_senders_pick_wins_when_the_recipient_has_it() {
        let r = both(Some(Channel::Sms));
        assert_eq!(
            choose_channel(Some(Channel::Email), &r, ContactChannel::Sms),
            (Channel::Email, Some("pat@example.org".to_owned()))
        );
    }

    #[test]
    fn the_recipients_preference_comes_next() {
        let r = both(Some(Channel::Email));
        assert_eq!(
            choose_channel(None, &r, ContactChannel::Sms).0,
            Channel::Email
        );
        let sms_only = person_with_contacts(PersonKind::Guardian, None, vec![sms()], &[]);
        assert_eq!(
            choose_channel(Some(Channel::Email), &sms_only, ContactChannel::Email).0,
            Channel::Sms
        );
    }

    #[test]
    fn the_district_default_applies_when_both_email_and_sms_exist() {
        let r = both(None);
        assert_eq!(
            choose_channel(None, &r, ContactChannel::Email).0,
            Channel::Email
        );
        assert_eq!(
            choose_channel(None, &r, ContactChannel::Sms).0,
            Channel::Sms
        );
    }

    #[test]
    fn whatever_contact_point_exists_is_used_else_the_app() {
        let email_only = person_with_contacts(PersonKind::Guardian, None, vec![email()], &[]);
        assert_eq!(
            choose_channel(None, &email_only, ContactChannel::Sms).0,
            Channel::Email
        );
        let none = person_with_contacts(PersonKind::Student, None, vec![], &[]);
        assert_eq!(
            choose_channel(Some(Channel::Sms), &none, ContactChannel::Sms),
            (Channel::App, None)
        );
    }

    #[test]
    fn the_app_counts_only_for_people_who_use_it() {
        let app_user =
            person_with_contacts(PersonKind::Guardian, Some(Channel::App), vec![sms()], &[]);
        assert_eq!(
            choose_channel(None, &app_user, ContactChannel::Sms),
            (Channel::App, None)
        );
        let r = both(None);
        assert_eq!(
            choose_channel(Some(Channel::App), &r, ContactChannel::Email).0,
            Channel::Email
        );
    }

    #[test]
    fn the_app_reaches_its_users_and_people_who_muted_but_not_the_unreachable() {
        let app_user = person_with_contacts(PersonKind::Guardian, Some(Channel::App), vec![], &[]);
        assert!(app_reaches(&app_user));
        assert!(app_reaches(&both(None)), "muted: in the app on purpose");
        let none = person_with_contacts(PersonKind::Guardian, None, vec![], &[]);
        assert!(!app_reaches(&none));
        let failing =
            person_with_contacts(PersonKind::Guardian, None, vec![sms()], &["+15550100001"]);
        assert!(!app_reaches(&failing), "its only phone is failing");
        let staff = person_with_contacts(PersonKind::Staff, None, vec![], &[]);
        assert!(app_reaches(&staff), "staff read in Homeroom's inbox");
    }

    fn planned(channel: Channel, address: &str) -> PlannedDelivery {
        PlannedDelivery {
            delivery_id: DeliveryId::new(uuid::Uuid::from_u128(1)),
            recipient_id: crate::testing::GUARDIAN,
            channel,
            address: Some(address.to_owned()),
            language: "es".to_owned(),
            text: "Hola".to_owned(),
            subject: Some("Aviso".to_owned()),
        }
    }

    #[test]
    fn a_failed_email_falls_back_to_sms_and_an_sms_to_email() {
        let r = both(Some(Channel::Email));
        let next = DeliveryId::new(uuid::Uuid::from_u128(2));
        let sms = fallback_for(&planned(Channel::Email, "pat@example.org"), false, &r, next)
            .expect("an SMS fallback");
        assert_eq!(
            (sms.channel, sms.address.as_deref(), sms.delivery_id),
            (Channel::Sms, Some("+15550100001"), next)
        );
        assert_eq!(
            (sms.text.as_str(), sms.language.as_str()),
            ("Hola", "es"),
            "the same text"
        );
        let email = fallback_for(&planned(Channel::Sms, "+15550100001"), false, &r, next)
            .expect("an email fallback");
        assert_eq!(email.channel, Channel::Email);
    }

    #[test]
    fn there_is_no_fallback_without_another_channel_or_for_a_fallback() {
        let sms_only = person_with_contacts(PersonKind::Guardian, None, vec![sms()], &[]);
        let next = DeliveryId::new(uuid::Uuid::from_u128(2));
        assert_eq!(
            fallback_for(
                &planned(Channel::Sms, "+15550100001"),
                false,
                &sms_only,
                next
            ),
            None
        );
        assert_eq!(
            fallback_for(
                &planned(Channel::Email, "pat@example.org"),
                true,
                &both(None),
                next
            ),
            None,
            "a message falls back once"
        );
        let failing_sms = person_with_contacts(
            PersonKind::Guardian,
            None,
            vec![sms(), email()],
            &["+15550100001"],
        );
        assert_eq!(
            fallback_for(
                &planned(Channel::Email, "pat@example.org"),
                false,
                &failing_sms,
                next
            ),
            None,
            "a failing contact point is no fallback"
        );
    }

    #[test]
    fn a_failing_contact_point_is_skipped_in_favour_of_the_other() {
        let r = person_with_contacts(
            PersonKind::Guardian,
            Some(Channel::Email),
            vec![sms(), email()],
            &["pat@example.org"],
        );
        assert_eq!(
            choose_channel(Some(Channel::Email), &r, ContactChannel::Email),
            (Channel::Sms, Some("+15550100001".to_owned()))
        );
    }
}
