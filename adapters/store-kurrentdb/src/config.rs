//! What a store needs to know besides the server: where its streams live on a shared
//! server, which of them are Homeroom's, and how hard a subscription tries to come back.

use homeroom_eventstore::StreamId;
use std::time::Duration;

/// The stream-name prefixes (categories) of Homeroom's own streams: what the domain
/// writes (`district-{d}`, `person-{d}:{id}`, `conversation-{d}:{id}`,
/// `delivery-{d}:{id}`, `smsline-{d}:…`, `smsnumber-{number}`, `inbound-{d}:{sid}`).
/// Subscriptions and `$all` reads are filtered to them. `homeroom_domain::StreamRef`
/// names the same list; a test in `tests/` keeps the two equal.
pub const HOMEROOM_CATEGORIES: &[&str] = &[
    "district-",
    "person-",
    "conversation-",
    "delivery-",
    "smsline-",
    "smsnumber-",
    "inbound-",
];

/// Where the adapter keeps its two indexes (see the crate docs): outside every category,
/// so neither `$all` reads nor subscriptions ever see them.
pub(crate) const INDEX_PREFIX: &str = "homeroom_index.";

/// The longest stream prefix accepted: stream names grow by it.
const MAX_PREFIX: usize = 100;

/// How a store is laid out on the server and how its subscriptions recover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KurrentConfig {
    /// Put in front of every stream name this store writes or reads, e.g. `""` (the
    /// default: Homeroom's streams under their own names) or `"t0190c1f6_"` so that one
    /// test, or one Homeroom instance, keeps to streams of its own on a shared server.
    pub stream_prefix: String,
    /// The stream-name prefixes that are Homeroom's (after `stream_prefix`): only
    /// streams starting with one of them may be appended to, and only they are read
    /// by [`read_all`](homeroom_eventstore::EventReader::read_all), `head` and
    /// subscriptions, through a server-side filter on `$all`. Default:
    /// [`HOMEROOM_CATEGORIES`].
    pub categories: Vec<String>,
    /// How a subscription comes back after it was dropped (by a lost connection, a
    /// leader change, or the server's "consumer too slow").
    pub resubscribe: ResubscribePolicy,
    /// How long [`KurrentStore::connect`](crate::KurrentStore::connect) waits for the
    /// server to answer its first read before giving up.
    pub connect_timeout: Duration,
}

impl Default for KurrentConfig {
    fn default() -> Self {
        Self {
            stream_prefix: String::new(),
            categories: HOMEROOM_CATEGORIES
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
            resubscribe: ResubscribePolicy::default(),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl KurrentConfig {
    /// The defaults with `prefix` in front of every stream name.
    pub fn with_stream_prefix(prefix: impl Into<String>) -> Self {
        Self {
            stream_prefix: prefix.into(),
            ..Self::default()
        }
    }

    /// Checks the configuration and derives the stream names and filter from it.
    pub(crate) fn namespace(&self) -> Result<Namespace, ConfigError> {
        let prefix = &self.stream_prefix;
        if prefix.len() > MAX_PREFIX {
            return Err(ConfigError::PrefixTooLong {
                len: prefix.len(),
                max: MAX_PREFIX,
            });
        }
        if prefix.starts_with('$') || has_blank(prefix) {
            return Err(ConfigError::BadPrefix(prefix.clone()));
        }
        if self.categories.is_empty() {
            return Err(ConfigError::NoCategories);
        }
        for category in &self.categories {
            let overlaps_index =
                INDEX_PREFIX.starts_with(category.as_str()) || category.starts_with(INDEX_PREFIX);
            if category.is_empty()
                || category.starts_with('$')
                || has_blank(category)
                || overlaps_index
            {
                return Err(ConfigError::BadCategory(category.clone()));
            }
        }
        if self.resubscribe.attempts == 0 {
            return Err(ConfigError::NoResubscribeAttempts);
        }
        Ok(Namespace {
            prefix: prefix.clone(),
            categories: self.categories.clone(),
        })
    }
}

fn has_blank(text: &str) -> bool {
    text.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// How a dropped subscription is reopened: after `first_delay`, doubling up to
/// `max_delay`, at most `attempts` times in a row without receiving anything; then the
/// subscription ends with the last error (and its consumer resubscribes from its
/// checkpoint, as after any error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResubscribePolicy {
    /// Reopenings in a row that may fail before the error reaches the consumer.
    pub attempts: u32,
    /// The wait before the first reopening.
    pub first_delay: Duration,
    /// The longest wait between two reopenings.
    pub max_delay: Duration,
}

impl Default for ResubscribePolicy {
    /// Eight attempts, 100 ms doubling to 5 s: about 17 s of trying before giving up.
    fn default() -> Self {
        Self {
            attempts: 8,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl ResubscribePolicy {
    /// The wait before reopening attempt `n` (1-based).
    pub(crate) fn delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.first_delay
            .checked_mul(factor)
            .map_or(self.max_delay, |d| d.min(self.max_delay))
    }
}

/// Why a [`KurrentConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Prefixes are part of every stream name; whitespace would make them ambiguous and
    /// `$` would put Homeroom's streams among the server's system streams.
    #[error(
        "{0:?} is not a usable stream prefix: no whitespace, control characters or leading '$'"
    )]
    BadPrefix(String),
    /// Long prefixes eat into the stream-name budget.
    #[error("a stream prefix is at most {max} bytes, got {len}")]
    PrefixTooLong {
        /// The length given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Without a category nothing could be appended or subscribed to.
    #[error("at least one stream category is needed")]
    NoCategories,
    /// A category must be non-empty, without whitespace or a leading `$`, and must not
    /// overlap the adapter's index streams (`homeroom_index.`), which must stay out of
    /// `$all` reads.
    #[error("{0:?} is not a usable stream category")]
    BadCategory(String),
    /// A subscription must be allowed to open at least once.
    #[error("resubscribe.attempts must be at least 1")]
    NoResubscribeAttempts,
}

/// Stream names as KurrentDB sees them, and the server-side filter of `$all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Namespace {
    prefix: String,
    categories: Vec<String>,
}

impl Namespace {
    /// The KurrentDB stream holding a Homeroom stream.
    pub(crate) fn stream_name(&self, stream: &StreamId) -> String {
        format!("{}{}", self.prefix, stream.as_str())
    }

    /// The Homeroom stream a KurrentDB stream holds, if it is one of this store's.
    pub(crate) fn homeroom_stream(&self, name: &str) -> Option<StreamId> {
        let rest = name.strip_prefix(self.prefix.as_str())?;
        StreamId::parse(rest).ok()
    }

    /// Whether `stream` belongs to one of the categories (may be appended to).
    pub(crate) fn admits(&self, stream: &StreamId) -> bool {
        self.categories
            .iter()
            .any(|c| stream.as_str().starts_with(c.as_str()))
    }

    /// The stream-name prefixes the server filters `$all` on.
    pub(crate) fn filter_prefixes(&self) -> Vec<String> {
        self.categories
            .iter()
            .map(|c| format!("{}{c}", self.prefix))
            .collect()
    }

    /// Whether the server-side filter lets the KurrentDB stream `name` through.
    #[cfg(test)]
    pub(crate) fn filter_matches(&self, name: &str) -> bool {
        self.filter_prefixes().iter().any(|p| name.starts_with(p))
    }

    /// The index stream of the batches whose first event is `event_id`.
    pub(crate) fn batch_index(&self, event_id: uuid::Uuid) -> String {
        format!("{}{INDEX_PREFIX}batch-{event_id}", self.prefix)
    }

    /// The index stream of the batches holding events of command `command_id`.
    pub(crate) fn command_index(&self, command_id: uuid::Uuid) -> String {
        format!("{}{INDEX_PREFIX}command-{command_id}", self.prefix)
    }

    /// The stream prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str) -> StreamId {
        StreamId::parse(name).unwrap()
    }

    #[test]
    fn the_default_filter_covers_every_homeroom_category_and_nothing_else() {
        let ns = KurrentConfig::default().namespace().unwrap();
        assert_eq!(ns.filter_prefixes(), HOMEROOM_CATEGORIES.to_vec());
        for name in [
            "district-d1",
            "person-d1:0190c1f6-0000-7000-8000-000000000000",
            "conversation-d1:x",
            "delivery-d1:x",
        ] {
            assert!(ns.filter_matches(name), "{name} is Homeroom's");
            assert!(ns.admits(&stream(name)));
        }
        for name in [
            "$all",
            "$ce-person",
            "$$district-d1",
            "districts",
            "other-d1",
            "homeroom_index.batch-0190",
            "homeroom_index.command-0190",
        ] {
            assert!(!ns.filter_matches(name), "{name} is not Homeroom's");
        }
    }

    #[test]
    fn a_prefix_isolates_a_store_on_a_shared_server() {
        let ns = KurrentConfig::with_stream_prefix("t42_")
            .namespace()
            .unwrap();
        let s = stream("person-d1:p");
        assert_eq!(ns.stream_name(&s), "t42_person-d1:p");
        assert_eq!(ns.homeroom_stream("t42_person-d1:p"), Some(s));
        assert_eq!(ns.homeroom_stream("person-d1:p"), None, "another store's");
        assert_eq!(ns.homeroom_stream("t42_"), None, "no stream id left");
        assert!(ns.filter_matches("t42_person-d1:p"));
        assert!(
            !ns.filter_matches("person-d1:p"),
            "unprefixed streams are not ours"
        );
        assert!(!ns.filter_matches("t43_person-d1:p"));
        let id = uuid::Uuid::nil();
        assert_eq!(ns.batch_index(id), format!("t42_homeroom_index.batch-{id}"));
        assert!(!ns.filter_matches(&ns.batch_index(id)));
        assert!(!ns.filter_matches(&ns.command_index(id)));
    }

    #[test]
    fn categories_are_a_config_value() {
        let config = KurrentConfig {
            categories: vec!["kit_".into(), "district-".into()],
            ..KurrentConfig::with_stream_prefix("t_")
        };
        let ns = config.namespace().unwrap();
        assert!(ns.admits(&stream("kit_any-0190")));
        assert!(ns.admits(&stream("district-d")));
        assert!(!ns.admits(&stream("person-d:p")), "not configured");
        assert_eq!(ns.filter_prefixes(), vec!["t_kit_", "t_district-"]);
    }

    #[test]
    fn unusable_configurations_are_refused() {
        let with = |prefix: &str, categories: &[&str]| KurrentConfig {
            stream_prefix: prefix.into(),
            categories: categories.iter().map(|c| (*c).to_owned()).collect(),
            ..KurrentConfig::default()
        };
        assert!(matches!(
            with("$sys", &["district-"]).namespace(),
            Err(ConfigError::BadPrefix(_))
        ));
        assert!(matches!(
            with("a b", &["district-"]).namespace(),
            Err(ConfigError::BadPrefix(_))
        ));
        assert!(matches!(
            with(&"p".repeat(101), &["district-"]).namespace(),
            Err(ConfigError::PrefixTooLong { len: 101, .. })
        ));
        assert_eq!(with("", &[]).namespace(), Err(ConfigError::NoCategories));
        for bad in ["", "$ce-", "a b", "h", "homeroom_", "homeroom_index.x"] {
            assert_eq!(
                with("", &[bad]).namespace(),
                Err(ConfigError::BadCategory(bad.into())),
                "{bad:?} overlaps the indexes or is malformed"
            );
        }
        let mut no_retries = KurrentConfig::default();
        no_retries.resubscribe.attempts = 0;
        assert_eq!(
            no_retries.namespace(),
            Err(ConfigError::NoResubscribeAttempts)
        );
    }

    #[test]
    fn resubscribe_delays_double_up_to_the_cap() {
        let policy = ResubscribePolicy::default();
        assert_eq!(policy.delay(1), Duration::from_millis(100));
        assert_eq!(policy.delay(2), Duration::from_millis(200));
        assert_eq!(policy.delay(4), Duration::from_millis(800));
        assert_eq!(policy.delay(7), Duration::from_secs(5));
        assert_eq!(policy.delay(40), Duration::from_secs(5), "no overflow");
    }
}
