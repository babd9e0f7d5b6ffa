//! A provider's status callback (Twilio's `MessageStatus`) becomes the delivery's
//! outcome. The callback URL names the district and the delivery (the worker builds it),
//! and the provider's signature over that URL authenticates it, so no lookup by the
//! provider's message id is needed.

use crate::react;
use homeroom_app::{CommandError, CommandService};
use homeroom_domain::commands::RecordDeliveryOutcome;
use homeroom_domain::{DeliveryId, DistrictId, OutcomeStatus};
use std::sync::Arc;

/// One status report from a provider, already authenticated and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The district the callback URL named.
    pub district: DistrictId,
    /// The delivery the callback URL named.
    pub delivery_id: DeliveryId,
    /// Where it stands now; `None` for an intermediate status (queued, sending).
    pub outcome: Option<OutcomeStatus>,
    /// The provider's message id.
    pub provider_message_id: Option<String>,
    /// The provider's error code, for failures.
    pub error: Option<String>,
    /// Whether the failure can never succeed on this address.
    pub permanent: bool,
}

/// Records status callbacks through the command service.
#[derive(Clone)]
pub struct StatusCallbacks {
    commands: Arc<CommandService>,
}

impl StatusCallbacks {
    /// Callbacks recorded through `commands`.
    pub fn new(commands: Arc<CommandService>) -> Self {
        Self { commands }
    }

    /// Records the outcome a callback reports; an intermediate status, a repeated or a
    /// late one changes nothing (the delivery rules make outcomes move forward only).
    ///
    /// # Errors
    /// [`CommandError`]: a rule's refusal (an unknown delivery) or a store failure.
    pub async fn record(&self, report: StatusReport) -> Result<(), CommandError> {
        let Some(status) = report.outcome else {
            return Ok(());
        };
        react(
            &self.commands,
            &report.district,
            None,
            RecordDeliveryOutcome {
                delivery_id: report.delivery_id,
                status,
                provider_message_id: report.provider_message_id,
                error: report.error,
                permanent: Some(report.permanent),
                sender: None,
                sent_text: None,
                translated_to: None,
            },
        )
        .await?;
        Ok(())
    }
}
