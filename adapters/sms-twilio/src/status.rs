//! Twilio's message statuses and error codes, read as Homeroom outcomes.
//!
//! A status callback (`POST /v1/webhooks/twilio/status`) carries `MessageStatus` and,
//! for a failure, `ErrorCode`: [`MessageStatus::parse`] then [`status_of`] say which
//! `RecordDeliveryOutcome` it is, and [`is_permanent_error`] whether it is `permanent`.

use std::fmt;
use std::str::FromStr;

use homeroom_domain::OutcomeStatus;
use serde::{Deserialize, Serialize};

/// Where the binary mounts the status-callback webhook (`HOMEROOM_PUBLIC_URL` + this is
/// [`crate::TwilioConfig::status_callback_url`]).
pub const STATUS_WEBHOOK_PATH: &str = "/v1/webhooks/twilio/status";
/// Where the binary mounts the inbound-message webhook (configured on the Twilio number).
pub const INBOUND_WEBHOOK_PATH: &str = "/v1/webhooks/twilio/inbound";

/// A message's status as Twilio names it (`MessageStatus` in callbacks, `status` in the
/// message resource).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Waiting in Twilio's queue.
    Queued,
    /// Accepted by a Messaging Service, not yet queued.
    Accepted,
    /// Scheduled for later.
    Scheduled,
    /// Being handed to the carrier.
    Sending,
    /// The carrier took it.
    Sent,
    /// The carrier confirmed it reached the handset.
    Delivered,
    /// Read (channels with read receipts).
    Read,
    /// The carrier could not deliver it.
    Undelivered,
    /// Twilio could not send it.
    Failed,
    /// Cancelled before it was sent (a scheduled message).
    Canceled,
    /// An inbound message being received.
    Receiving,
    /// An inbound message, received.
    Received,
}

impl MessageStatus {
    /// Every status, in the order a message goes through them.
    pub const ALL: [MessageStatus; 12] = [
        MessageStatus::Queued,
        MessageStatus::Accepted,
        MessageStatus::Scheduled,
        MessageStatus::Sending,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Undelivered,
        MessageStatus::Failed,
        MessageStatus::Canceled,
        MessageStatus::Receiving,
        MessageStatus::Received,
    ];

    /// Twilio's name for it (`queued`, `delivered`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Accepted => "accepted",
            MessageStatus::Scheduled => "scheduled",
            MessageStatus::Sending => "sending",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Undelivered => "undelivered",
            MessageStatus::Failed => "failed",
            MessageStatus::Canceled => "canceled",
            MessageStatus::Receiving => "receiving",
            MessageStatus::Received => "received",
        }
    }

    /// The status Twilio names `name`, if it is one (exact, lowercase as Twilio sends).
    pub fn parse(name: &str) -> Option<MessageStatus> {
        MessageStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name Twilio does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Twilio message status: {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for MessageStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MessageStatus::parse(s).ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// The Homeroom outcome a status is, or `None` while the message is still on its way
/// (queued, accepted, scheduled, sending) or for inbound statuses: `sent` is
/// [`OutcomeStatus::Sent`]; `delivered` and `read` are [`OutcomeStatus::Delivered`];
/// `undelivered`, `failed` and `canceled` are [`OutcomeStatus::Failed`].
pub fn status_of(status: MessageStatus) -> Option<OutcomeStatus> {
    match status {
        MessageStatus::Queued
        | MessageStatus::Accepted
        | MessageStatus::Scheduled
        | MessageStatus::Sending
        | MessageStatus::Receiving
        | MessageStatus::Received => None,
        MessageStatus::Sent => Some(OutcomeStatus::Sent),
        MessageStatus::Delivered | MessageStatus::Read => Some(OutcomeStatus::Delivered),
        MessageStatus::Undelivered | MessageStatus::Failed | MessageStatus::Canceled => {
            Some(OutcomeStatus::Failed)
        }
    }
}

/// Twilio error codes that say the recipient's number cannot take texts, from the
/// create call (`21xxx`) or a status callback's `ErrorCode` (`30xxx`): the delivery fails
/// for good and the contact point is marked failing, so later messages use the other
/// channel until it is reset.
const RECIPIENT_ERRORS: [(u32, &str); 10] = [
    (21211, "Invalid 'To' phone number"),
    (21265, "'To' number cannot be a short code"),
    (21401, "Invalid phone number"),
    (21407, "This phone number type does not support SMS"),
    (21612, "The 'To' number is not currently reachable via SMS"),
    (21614, "'To' number is not a valid mobile number"),
    (30004, "Message blocked (by the recipient or their carrier)"),
    (
        30005,
        "Unknown destination handset (the number does not exist)",
    ),
    (30006, "Landline or unreachable carrier"),
    (
        21610,
        "Attempt to send to an unsubscribed recipient (they sent STOP; see UNSUBSCRIBED)",
    ),
];

/// Twilio error codes about our side of the text (the sending number, the account, the
/// text itself), not the recipient's number: sending it again can never succeed, so
/// the delivery fails for good and falls back, but the family's number is not blamed
/// (a school's unregistered number would otherwise mark every family it texts failing).
const SENDER_ERRORS: [(u32, &str); 12] = [
    (21266, "'To' and 'From' cannot be the same"),
    (
        21408,
        "Permission to send an SMS has not been enabled for the region",
    ),
    (21602, "Message body is required"),
    (21603, "'From' phone number is required"),
    (21604, "'To' phone number is required"),
    (
        21606,
        "The 'From' number is not a valid, SMS-capable Twilio number",
    ),
    (21608, "The 'To' number is unverified (trial account)"),
    (21617, "The body exceeds the 1600-character limit"),
    (21659, "'From' is not a Twilio phone number or short code"),
    (21660, "The 'From' number belongs to another account"),
    (30032, "Toll-free number not verified"),
    (30034, "Sender not registered for US A2P 10DLC"),
];

/// Whether Twilio's error `code` means this text can never reach this number: the
/// delivery is then failed for good and falls back to the other channel. Any other
/// code (rate limits, carrier hiccups, an unreachable handset that may be switched
/// off) is worth retrying.
pub fn is_permanent_error(code: u32) -> bool {
    listed(&RECIPIENT_ERRORS, code) || listed(&SENDER_ERRORS, code)
}

fn listed(errors: &[(u32, &str)], code: u32) -> bool {
    errors.iter().any(|(c, _)| *c == code)
}

/// Other codes a status callback often carries, worth naming in the record.
const CARRIER_ERRORS: [(u32, &str); 5] = [
    (30001, "Queue overflow"),
    (30002, "Account suspended"),
    (30003, "Unreachable destination handset"),
    (30007, "Message filtered by the carrier"),
    (30008, "Unknown error"),
];

/// What Twilio's error `code` means, in its own words, when it is one Homeroom knows.
pub fn meaning(code: u32) -> Option<&'static str> {
    RECIPIENT_ERRORS
        .iter()
        .chain(&SENDER_ERRORS)
        .chain(&CARRIER_ERRORS)
        .find(|(c, _)| *c == code)
        .map(|(_, m)| *m)
}

/// Whether Twilio's error `code` blames the recipient's number (see
/// [`is_permanent_error`]); an opt-out ([`UNSUBSCRIBED`]) bars only the sending number.
pub fn blames_recipient(code: u32) -> bool {
    listed(&RECIPIENT_ERRORS, code) && code != UNSUBSCRIBED
}

/// Twilio's "attempt to send to an unsubscribed recipient": they answered STOP to the
/// sending number. Permanent for that number, but the recipient's number works and
/// other numbers may text it, so it does not mark the contact point failing.
pub const UNSUBSCRIBED: u32 = 21610;

/// A status callback's form, read: which message, its status, Twilio's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCallback {
    /// `MessageSid`: the provider message id the worker recorded at hand-over.
    pub message_sid: String,
    /// `MessageStatus`.
    pub status: MessageStatus,
    /// `ErrorCode`, sent with `failed` and `undelivered`.
    pub error_code: Option<u32>,
}

/// Why a status callback's form could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// A field Twilio always sends is missing.
    #[error("the status callback has no {0}")]
    Missing(&'static str),
    /// `MessageStatus` is not a status Twilio has.
    #[error(transparent)]
    UnknownStatus(#[from] UnknownStatus),
    /// `ErrorCode` is not a number.
    #[error("the status callback's ErrorCode is not a number: {0:?}")]
    BadErrorCode(String),
}

impl StatusCallback {
    /// Reads the (already verified) form fields of a status callback.
    ///
    /// # Errors
    /// [`CallbackError`] when `MessageSid` or `MessageStatus` is missing or unreadable.
    pub fn from_form<K, V>(form: &[(K, V)]) -> Result<Self, CallbackError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k.as_ref() == name)
                .map(|(_, v)| v.as_ref().trim())
                .filter(|v| !v.is_empty())
        };
        let message_sid = field("MessageSid").ok_or(CallbackError::Missing("MessageSid"))?;
        let status = field("MessageStatus")
            .ok_or(CallbackError::Missing("MessageStatus"))?
            .parse()?;
        let error_code = field("ErrorCode")
            .map(|c| {
                c.parse()
                    .map_err(|_| CallbackError::BadErrorCode(c.to_owned()))
            })
            .transpose()?;
        Ok(Self {
            message_sid: message_sid.to_owned(),
            status,
            error_code,
        })
    }

    /// The outcome to record, if this status is one ([`status_of`]).
    pub fn outcome(&self) -> Option<OutcomeStatus> {
        status_of(self.status)
    }

    /// What the record says of a failure: the status and Twilio's code with its meaning
    /// (`undelivered (30003): Unreachable destination handset`), so a records officer
    /// reads why without a code table; `None` unless it failed.
    pub fn error(&self) -> Option<String> {
        if self.outcome() != Some(OutcomeStatus::Failed) {
            return None;
        }
        Some(match self.error_code {
            Some(code) => match meaning(code) {
                Some(meaning) => format!("{} ({code}): {meaning}", self.status),
                None => format!("{} ({code})", self.status),
            },
            None => self.status.to_string(),
        })
    }

    /// Whether the failure condemns the recipient's number ([`blames_recipient`]): not
    /// an opt-out, which bars only the sending number, nor an error of our side.
    pub fn permanent(&self) -> bool {
        self.error_code.is_some_and(blames_recipient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_callback_reads_as_a_failed_outcome_with_its_error() {
        let form = [
            ("MessageSid", "SM1"),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30006"),
            ("AccountSid", "AC1"),
        ];
        let callback = StatusCallback::from_form(&form).unwrap();
        assert_eq!(callback.message_sid, "SM1");
        assert_eq!(callback.outcome(), Some(OutcomeStatus::Failed));
        assert_eq!(callback.error_code, Some(30006));
        assert!(callback.permanent());
        assert_eq!(
            callback.error().as_deref(),
            Some("undelivered (30006): Landline or unreachable carrier")
        );
        // An unknown code is named as it came; a failure without one by its status.
        let unknown = StatusCallback::from_form(&[
            ("MessageSid", "SM1"),
            ("MessageStatus", "failed"),
            ("ErrorCode", "39999"),
        ])
        .unwrap();
        assert_eq!(unknown.error().as_deref(), Some("failed (39999)"));
        let bare = StatusCallback::from_form(&[("MessageSid", "SM1"), ("MessageStatus", "failed")])
            .unwrap();
        assert_eq!(bare.error().as_deref(), Some("failed"));
        let sent =
            StatusCallback::from_form(&[("MessageSid", "SM1"), ("MessageStatus", "sent")]).unwrap();
        assert_eq!(sent.error(), None);
    }

    #[test]
    fn an_unsubscribed_callback_fails_without_condemning_the_number() {
        let form = [
            ("MessageSid", "SM1"),
            ("MessageStatus", "failed"),
            ("ErrorCode", "21610"),
        ];
        let callback = StatusCallback::from_form(&form).unwrap();
        assert_eq!(callback.outcome(), Some(OutcomeStatus::Failed));
        assert!(!callback.permanent());
    }

    #[test]
    fn a_callback_without_sid_or_with_an_unknown_status_is_refused() {
        assert_eq!(
            StatusCallback::from_form(&[("MessageStatus", "sent")]),
            Err(CallbackError::Missing("MessageSid"))
        );
        assert!(matches!(
            StatusCallback::from_form(&[("MessageSid", "SM1"), ("MessageStatus", "lost")]),
            Err(CallbackError::UnknownStatus(_))
        ));
        assert!(matches!(
            StatusCallback::from_form(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", "failed"),
                ("ErrorCode", "x")
            ]),
            Err(CallbackError::BadErrorCode(_))
        ));
    }

    #[test]
    fn statuses_on_the_way_are_not_outcomes_yet() {
        for name in ["queued", "accepted", "scheduled", "sending"] {
            let status = MessageStatus::parse(name).unwrap();
            assert_eq!(status_of(status), None, "{name}");
        }
    }

    #[test]
    fn sent_is_sent() {
        assert_eq!(status_of(MessageStatus::Sent), Some(OutcomeStatus::Sent));
    }

    #[test]
    fn delivered_and_read_are_delivered() {
        assert_eq!(
            status_of(MessageStatus::Delivered),
            Some(OutcomeStatus::Delivered)
        );
        assert_eq!(
            status_of(MessageStatus::Read),
            Some(OutcomeStatus::Delivered)
        );
    }

    #[test]
    fn undelivered_failed_and_canceled_are_failed() {
        for status in [
            MessageStatus::Undelivered,
            MessageStatus::Failed,
            MessageStatus::Canceled,
        ] {
            assert_eq!(status_of(status), Some(OutcomeStatus::Failed), "{status}");
        }
    }

    #[test]
    fn every_status_parses_from_its_twilio_name_and_nothing_else_does() {
        for status in MessageStatus::ALL {
            assert_eq!(status.as_str().parse::<MessageStatus>(), Ok(status));
        }
        assert_eq!(MessageStatus::parse("Delivered"), None);
        assert!("lost".parse::<MessageStatus>().is_err());
    }

    #[test]
    fn bad_and_unsubscribed_numbers_are_permanent_but_rate_limits_are_not() {
        for code in [21211, 21610, 21614, 30005, 30006] {
            assert!(is_permanent_error(code), "{code}");
        }
        for code in [20429, 20003, 30001, 30003, 30008, 20500] {
            assert!(!is_permanent_error(code), "{code}");
        }
    }

    #[test]
    fn errors_of_our_number_or_text_are_permanent_but_never_blame_the_family() {
        for code in [21606, 21617, 21659, 30032, 30034] {
            assert!(is_permanent_error(code), "{code}");
            assert!(!blames_recipient(code), "{code}");
        }
        for code in [21211, 21614, 30005, 30006] {
            assert!(blames_recipient(code), "{code}");
        }
        assert!(!blames_recipient(UNSUBSCRIBED));
        let unregistered = StatusCallback::from_form(&[
            ("MessageSid", "SM1"),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30034"),
        ])
        .unwrap();
        assert_eq!(unregistered.outcome(), Some(OutcomeStatus::Failed));
        assert!(
            !unregistered.permanent(),
            "the school's number, not the family's"
        );
    }
}
