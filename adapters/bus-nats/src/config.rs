//! The stream and consumer settings, and why they are what they are.

use crate::NatsError;
use async_nats::jetstream::{consumer, stream};
use std::time::Duration;

/// How the bus is laid out on NATS. The defaults suit a deployment; tests give each run
/// its own [`NatsConfig::stream`] and [`NatsConfig::subject_prefix`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// The JetStream stream's name.
    pub stream: String,
    /// The subjects' first tokens, in place of [`homeroom_bus::SUBJECT_PREFIX`]: the stream
    /// holds `<prefix>.>`.
    pub subject_prefix: String,
    /// How long JetStream remembers a message id to drop a duplicate. The relay needs it
    /// only for the few seconds of a retried batch (it asks the bus what it holds before
    /// sending a batch again), so the JetStream default of 2 minutes is plenty.
    pub duplicate_window: Duration,
    /// How long a worker has to settle an item before it is handed out again. Longer than
    /// the slowest provider call a worker makes on one item (workers call
    /// [`homeroom_bus::WorkItem::in_progress`] to hold on longer).
    pub ack_wait: Duration,
    /// Whether redeliveries after a missed ack wait slow down: `None` (the default)
    /// hands an unsettled item out again every `ack_wait`; `Some(max)` waits `ack_wait`,
    /// then twice that, and so on, up to `max`. Off by default because JetStream (2.9 to
    /// this day) then stretches the delay a worker asks for with
    /// [`homeroom_bus::WorkItem::retry_after`] by the backoff step less the ack wait, and
    /// the worker's own retry schedule is the one that matters; a worker sees `attempt`
    /// and gives up on an item that keeps failing.
    pub redelivery_backoff: Option<Duration>,
    /// How many times an item may be handed out: unlimited (`-1`, the default), since the
    /// worker decides when to give up and records that as an event; the bus never drops
    /// an item silently. JetStream refuses unlimited together with a backoff, so
    /// [`Self::BACKOFF_MAX_DELIVER`] is used then.
    pub max_deliver: i64,
    /// The bound on every JetStream request, publish acknowledgement included.
    pub request_timeout: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            stream: "HOMEROOM_EVENTS".to_owned(),
            subject_prefix: homeroom_bus::SUBJECT_PREFIX.to_owned(),
            duplicate_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(30),
            redelivery_backoff: None,
            max_deliver: -1,
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl NatsConfig {
    /// The delivery limit used with a [`NatsConfig::redelivery_backoff`] when
    /// [`NatsConfig::max_deliver`] is unlimited: years of redeliveries at any backoff.
    pub const BACKOFF_MAX_DELIVER: i64 = 1_000_000;

    /// Checks the names before the server sees them: a wildcard in the prefix would
    /// widen the stream to subjects it must not own.
    pub(crate) fn validate(&self) -> Result<(), NatsError> {
        let bad_name = self.stream.is_empty()
            || self
                .stream
                .chars()
                .any(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace());
        if bad_name {
            return Err(NatsError::BadStreamName(self.stream.clone()));
        }
        let bad_prefix = self.subject_prefix.split('.').any(|token| {
            token.is_empty()
                || token
                    .chars()
                    .any(|c| matches!(c, '*' | '>') || c.is_whitespace() || c.is_control())
        });
        if bad_prefix {
            return Err(NatsError::BadPrefix(self.subject_prefix.clone()));
        }
        Ok(())
    }

    /// The stream: every Homeroom subject, on disk, kept by limits (none set: the bus is
    /// a copy of the log, and a consumer that falls behind must still find its items).
    pub(crate) fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            description: Some("Homeroom's event log, one message per event".to_owned()),
            subjects: vec![format!("{}.>", self.subject_prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            duplicate_window: self.duplicate_window,
            ..stream::Config::default()
        }
    }

    /// The redelivery schedule: `ack_wait`, doubling up to the backoff's cap; empty
    /// without one. JetStream takes its first entry as the ack wait.
    pub(crate) fn backoff(&self) -> Vec<Duration> {
        let Some(max) = self.redelivery_backoff else {
            return Vec::new();
        };
        let max = max.max(self.ack_wait);
        let mut delays = vec![self.ack_wait];
        let mut next = self.ack_wait;
        while next < max && delays.len() < 16 {
            next = (next * 2).min(max);
            delays.push(next);
        }
        delays
    }

    /// The shared durable pull consumer on `filters` (already under the prefix).
    pub(crate) fn consumer_config(
        &self,
        durable: &str,
        filters: &[String],
    ) -> consumer::pull::Config {
        let (filter_subject, filter_subjects) = match filters {
            [one] => (one.clone(), Vec::new()),
            many => (String::new(), many.to_vec()),
        };
        let backoff = self.backoff();
        let max_deliver = match (self.max_deliver, backoff.len()) {
            (_, 0) => self.max_deliver,
            (limit, _) if limit < 0 => Self::BACKOFF_MAX_DELIVER,
            // JetStream wants more deliveries than backoff steps.
            (limit, steps) => limit.max(steps as i64 + 1),
        };
        consumer::pull::Config {
            durable_name: Some(durable.to_owned()),
            description: Some("Homeroom work queue".to_owned()),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver,
            backoff,
            filter_subject,
            filter_subjects,
            ..consumer::pull::Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_items_come_back_every_ack_wait_without_limit() {
        let config = NatsConfig::default().consumer_config("d", &[]);
        assert_eq!(config.ack_wait, Duration::from_secs(30));
        assert!(config.backoff.is_empty());
        assert_eq!(config.max_deliver, -1);
        assert_eq!(config.ack_policy, consumer::AckPolicy::Explicit);
    }

    #[test]
    fn a_backoff_starts_at_the_ack_wait_and_doubles_up_to_its_cap() {
        let config = NatsConfig {
            ack_wait: Duration::from_secs(30),
            redelivery_backoff: Some(Duration::from_secs(300)),
            ..NatsConfig::default()
        };
        let secs: Vec<u64> = config.backoff().iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![30, 60, 120, 240, 300]);
        let consumer = config.consumer_config("d", &[]);
        assert_eq!(consumer.backoff, config.backoff());
        assert_eq!(consumer.max_deliver, NatsConfig::BACKOFF_MAX_DELIVER);
        let limited = NatsConfig {
            max_deliver: 3,
            ..config
        };
        assert_eq!(limited.consumer_config("d", &[]).max_deliver, 6);
    }

    #[test]
    fn a_backoff_cap_below_the_ack_wait_leaves_the_ack_wait_alone() {
        let config = NatsConfig {
            ack_wait: Duration::from_secs(30),
            redelivery_backoff: Some(Duration::from_secs(1)),
            ..NatsConfig::default()
        };
        assert_eq!(config.backoff(), vec![Duration::from_secs(30)]);
    }

    #[test]
    fn one_filter_uses_the_single_subject_field_every_server_knows() {
        let config = NatsConfig::default();
        let one = config.consumer_config("d", &["p.*.delivery.x".to_owned()]);
        assert_eq!(one.filter_subject, "p.*.delivery.x");
        assert!(one.filter_subjects.is_empty());
        let two = config.consumer_config("d", &["a".to_owned(), "b".to_owned()]);
        assert!(two.filter_subject.is_empty());
        assert_eq!(two.filter_subjects, vec!["a", "b"]);
    }

    #[test]
    fn wildcards_and_dots_are_refused_in_names() {
        let prefix = |p: &str| NatsConfig {
            subject_prefix: p.to_owned(),
            ..NatsConfig::default()
        };
        assert!(NatsConfig::default().validate().is_ok());
        assert!(prefix("t1.events").validate().is_ok());
        for bad in ["", "a.*", "a.>", "a..b", "a b", ".a"] {
            assert!(
                matches!(prefix(bad).validate(), Err(NatsError::BadPrefix(_))),
                "{bad:?} accepted"
            );
        }
        let stream = NatsConfig {
            stream: "A.B".to_owned(),
            ..NatsConfig::default()
        };
        assert!(matches!(
            stream.validate(),
            Err(NatsError::BadStreamName(_))
        ));
    }
}
