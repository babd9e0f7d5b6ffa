//! The instance's settings: defaults, then a TOML file, then `HOMEROOM_*` environment
//! variables, then command-line flags, each overriding the one before (figment).
//!
//! Keys are API.md's setting names, lowercased, without the prefix: `HOMEROOM_DATA_DIR`
//! is `data_dir` in the file and `--data-dir` on the command line.

use clap::Args;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Every setting key, as it appears in the file and (uppercased, prefixed) in the
/// environment.
pub const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "store",
    "read_store",
    "bus",
    "sms",
    "twilio_account_sid",
    "twilio_auth_token",
    "twilio_base_url",
    "email",
    "smtp_url",
    "email_from",
    "public_url",
    "translator",
    "translate_url",
    "translate_api_key",
    "jwt_key_file",
    "pg_schema",
    "relay",
    "nats_stream",
    "nats_prefix",
    "nats_ack_wait",
    "pg_pool",
];

/// The `HOMEROOM_*` variables among `names` that are no setting: a typo such as
/// `HOMEROOM_STOR` would otherwise leave the default in force without a word (a key the
/// file does not know is an error; the environment is shared with other tools, so
/// there it is a warning).
pub fn unknown_variables(names: impl Iterator<Item = std::ffi::OsString>) -> Vec<String> {
    names
        .filter_map(|name| name.into_string().ok())
        .filter(|name| {
            name.strip_prefix("HOMEROOM_").is_some_and(|key| {
                key != "CONFIG" && !KEYS.iter().any(|k| k.eq_ignore_ascii_case(key))
            })
        })
        .collect()
}

/// The settings of one instance, as resolved from every source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the API listens (`127.0.0.1:8080`; port 0 picks a free one).
    pub listen: String,
    /// Where the instance keeps its data (`./homeroom-data`).
    pub data_dir: PathBuf,
    /// The event store: unset or `sqlite` for `<data_dir>/events.sqlite`,
    /// `sqlite://PATH`, `postgres://…`, or `kurrentdb://…` / `esdb://…`.
    pub store: Option<String>,
    /// Where read models live: unset for the store's database (SQLite in the data
    /// directory for KurrentDB), `sqlite://PATH` or `postgres://…`.
    pub read_store: Option<String>,
    /// The delivery bus: unset or `in-process`, or `nats://…`.
    pub bus: Option<String>,
    /// The SMS channel: `sandbox` (default) or `twilio`.
    pub sms: Option<String>,
    /// Twilio account SID (with `sms = "twilio"`).
    pub twilio_account_sid: Option<String>,
    /// Twilio auth token (with `sms = "twilio"`).
    pub twilio_auth_token: Option<String>,
    /// Twilio API base URL (default Twilio's).
    pub twilio_base_url: Option<String>,
    /// The email channel: `sandbox` (default) or `smtp`.
    pub email: Option<String>,
    /// SMTP server URL (with `email = "smtp"`).
    pub smtp_url: Option<String>,
    /// The From address of email (with `email = "smtp"`).
    pub email_from: Option<String>,
    /// The external base URL status callbacks go to.
    pub public_url: Option<String>,
    /// Machine translation: `none` (default: texts go out in the language they were
    /// written in, marked untranslated) or `libretranslate`.
    pub translator: Option<String>,
    /// The LibreTranslate service's base URL (with `translator = "libretranslate"`).
    pub translate_url: Option<String>,
    /// Its API key, if the service wants one.
    pub translate_api_key: Option<String>,
    /// The token signing key (default `<data_dir>/jwt.key`).
    pub jwt_key_file: Option<PathBuf>,
    /// The PostgreSQL schema of this instance's events (default `homeroom`; its read
    /// models go in `<schema>_read`), so one database can hold several instances.
    pub pg_schema: Option<String>,
    /// Whether `serve` runs the relay that copies the log onto NATS (default true; turn
    /// it off on all but one node).
    pub relay: Option<bool>,
    /// The JetStream stream of this instance's events (default `HOMEROOM_EVENTS`).
    pub nats_stream: Option<String>,
    /// The subject prefix of this instance's events (default `homeroom.events`).
    pub nats_prefix: Option<String>,
    /// Seconds a delivery handed to a worker that died may stay unacknowledged before
    /// another worker gets it (default 30; a live worker holds on to what it is still
    /// sending). Every process of a deployment should set the same value.
    pub nats_ack_wait: Option<u64>,
    /// Connections each of a process's PostgreSQL pools may open: the event store's
    /// (default 10) and the read models' queries (default 8). A process opens at most
    /// about twice this plus four (the read models' writer, the lease, notifications),
    /// so the nodes and workers of a deployment must fit the server's `max_connections`.
    pub pg_pool: Option<u32>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./homeroom-data"),
            store: None,
            read_store: None,
            bus: None,
            sms: None,
            twilio_account_sid: None,
            twilio_auth_token: None,
            twilio_base_url: None,
            email: None,
            smtp_url: None,
            email_from: None,
            public_url: None,
            translator: None,
            translate_url: None,
            translate_api_key: None,
            jwt_key_file: None,
            pg_schema: None,
            relay: None,
            nats_stream: None,
            nats_prefix: None,
            nats_ack_wait: None,
            pg_pool: None,
        }
    }
}

/// The flags every subcommand that opens the instance takes. Each overrides the same
/// key of the file and the environment.
#[derive(Debug, Clone, Default, Args, Serialize)]
pub struct InstanceArgs {
    /// A TOML file of settings (keys: listen, data_dir, store, …).
    #[arg(long, env = "HOMEROOM_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where the instance keeps its data [env: HOMEROOM_DATA_DIR] [default: ./homeroom-data].
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// The event store: `sqlite` (default: <data-dir>/events.sqlite), `sqlite://PATH`, `postgres://…`, `kurrentdb://…` [env: HOMEROOM_STORE].
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Where read models live (default: the store's database) [env: HOMEROOM_READ_STORE].
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_store: Option<String>,
    /// The delivery bus: `in-process` (default) or `nats://HOST:PORT` [env: HOMEROOM_BUS].
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// The SMS channel: `sandbox` (default) or `twilio` [env: HOMEROOM_SMS].
    #[arg(long, value_name = "CHANNEL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sms: Option<String>,
    /// Twilio account SID [env: HOMEROOM_TWILIO_ACCOUNT_SID].
    #[arg(long, value_name = "SID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub twilio_account_sid: Option<String>,
    /// Twilio auth token [env: HOMEROOM_TWILIO_AUTH_TOKEN].
    #[arg(long, value_name = "TOKEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub twilio_auth_token: Option<String>,
    /// Twilio API base URL [env: HOMEROOM_TWILIO_BASE_URL].
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub twilio_base_url: Option<String>,
    /// The email channel: `sandbox` (default) or `smtp` [env: HOMEROOM_EMAIL].
    #[arg(long, value_name = "CHANNEL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// SMTP server URL [env: HOMEROOM_SMTP_URL].
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_url: Option<String>,
    /// The From address of email [env: HOMEROOM_EMAIL_FROM].
    #[arg(long, value_name = "ADDRESS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_from: Option<String>,
    /// The external base URL status callbacks go to [env: HOMEROOM_PUBLIC_URL].
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Machine translation: `none` (default) or `libretranslate` [env: HOMEROOM_TRANSLATOR].
    #[arg(long, value_name = "SERVICE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub translator: Option<String>,
    /// The LibreTranslate base URL [env: HOMEROOM_TRANSLATE_URL].
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub translate_url: Option<String>,
    /// The LibreTranslate API key [env: HOMEROOM_TRANSLATE_API_KEY].
    #[arg(long, value_name = "KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub translate_api_key: Option<String>,
    /// The token signing key (default: <data-dir>/jwt.key) [env: HOMEROOM_JWT_KEY_FILE].
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_key_file: Option<PathBuf>,
    /// The PostgreSQL schema of the events (default homeroom; read models in <schema>_read) [env: HOMEROOM_PG_SCHEMA].
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pg_schema: Option<String>,
}

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file that does not parse, or holds an unknown key or a value of the wrong type.
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// The config file named does not exist.
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    /// A backend needs a setting that is not set.
    #[error("{setting} must be set {because}")]
    Missing {
        /// The setting, as its environment variable.
        setting: &'static str,
        /// When it is needed.
        because: &'static str,
    },
    /// A value no version understands.
    #[error("{setting} = {value:?} is not a valid value; expected {expected}")]
    Invalid {
        /// The setting, as its environment variable.
        setting: &'static str,
        /// The value given (a URL's scheme only).
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
}

/// Where the events are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, in a schema of its own.
    Postgres {
        /// The `postgres://` URL.
        url: String,
        /// The schema of the events.
        schema: String,
    },
    /// A KurrentDB (EventStoreDB) server.
    KurrentDb {
        /// The connection string.
        url: String,
    },
}

/// Where the read models live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadStoreChoice {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, in a schema of its own.
    Postgres {
        /// The `postgres://` URL.
        url: String,
        /// The schema of the read models.
        schema: String,
    },
}

/// How delivery work travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusChoice {
    /// In this process, from the store (the embedded default).
    InProcess,
    /// NATS JetStream.
    Nats {
        /// The `nats://` URL.
        url: String,
    },
}

/// How texts are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsChoice {
    /// Recorded as delivered, never sent.
    Sandbox,
    /// The Twilio Messages API.
    Twilio {
        /// The account SID.
        account_sid: String,
        /// The auth token (also what webhooks are verified with).
        auth_token: String,
        /// The API base URL.
        base_url: Option<String>,
    },
}

/// How emails are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailChoice {
    /// Recorded as delivered, never sent.
    Sandbox,
    /// An SMTP server.
    Smtp {
        /// `smtp://…` or `smtps://…`.
        url: String,
        /// The From address.
        from: String,
    },
}

/// How texts are translated to each recipient's language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranslatorChoice {
    /// Not at all: every text goes out as written, marked untranslated.
    None,
    /// A LibreTranslate service.
    LibreTranslate {
        /// Its base URL.
        url: String,
        /// Its API key, if it wants one.
        api_key: Option<String>,
    },
}

/// Every outside system an instance talks to, as the settings choose them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backends {
    /// The event store.
    pub store: StoreChoice,
    /// The read models.
    pub read_store: ReadStoreChoice,
    /// The bus.
    pub bus: BusChoice,
    /// SMS.
    pub sms: SmsChoice,
    /// Email.
    pub email: EmailChoice,
    /// Machine translation.
    pub translator: TranslatorChoice,
}

impl Settings {
    /// Resolves the settings: defaults, `args.config` (or `HOMEROOM_CONFIG`), the
    /// `HOMEROOM_*` environment, then `args`.
    ///
    /// # Errors
    /// [`ConfigError`] when the file is missing or malformed or a value has the wrong type.
    pub fn load(args: &InstanceArgs) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = &args.config {
            if !file.is_file() {
                return Err(ConfigError::MissingFile(file.clone()));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        for name in unknown_variables(std::env::vars_os().map(|(name, _)| name)) {
            tracing::warn!(
                "{name} is not a Homeroom setting and is ignored (the settings are {})",
                KEYS.iter()
                    .map(|k| format!("HOMEROOM_{}", k.to_uppercase()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        figment
            .merge(Env::prefixed("HOMEROOM_").only(KEYS))
            .merge(Serialized::globals(args))
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))
    }

    /// The token signing key file.
    pub fn jwt_key_file(&self) -> PathBuf {
        self.jwt_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("jwt.key"))
    }

    /// The PostgreSQL schema of the events.
    pub fn pg_schema(&self) -> String {
        set(&self.pg_schema).unwrap_or("homeroom").to_owned()
    }

    /// Every backend the settings choose, checked together at start, so a deployment
    /// with a wrong or incomplete setting learns it at once, not at the first message.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for values no backend understands;
    /// [`ConfigError::Missing`] when a backend lacks a setting it needs.
    pub fn backends(&self) -> Result<Backends, ConfigError> {
        for (setting, value) in [
            ("HOMEROOM_PUBLIC_URL", &self.public_url),
            ("HOMEROOM_TWILIO_BASE_URL", &self.twilio_base_url),
            ("HOMEROOM_TRANSLATE_URL", &self.translate_url),
        ] {
            if let Some(value) = set(value) {
                http_url(setting, value)?;
            }
        }
        if self.pg_pool.is_some_and(|n| n < 2) {
            return Err(ConfigError::Invalid {
                setting: "HOMEROOM_PG_POOL",
                value: self.pg_pool.unwrap_or_default().to_string(),
                expected: "a number of connections of at least 2",
            });
        }
        if self.nats_ack_wait == Some(0) {
            return Err(ConfigError::Invalid {
                setting: "HOMEROOM_NATS_ACK_WAIT",
                value: "0".to_owned(),
                expected: "a number of seconds of at least 1",
            });
        }
        let store = self.store()?;
        let read_store = match set(&self.read_store) {
            None => match &store {
                StoreChoice::Postgres { url, schema } => ReadStoreChoice::Postgres {
                    url: url.clone(),
                    schema: format!("{schema}_read"),
                },
                _ => ReadStoreChoice::Sqlite(self.data_dir.join("read.sqlite")),
            },
            Some(value) => match sqlite_path(value) {
                Some(path) => ReadStoreChoice::Sqlite(
                    path.unwrap_or_else(|| self.data_dir.join("read.sqlite")),
                ),
                None if is_postgres(value) => ReadStoreChoice::Postgres {
                    url: value.to_owned(),
                    schema: format!("{}_read", self.pg_schema()),
                },
                None => {
                    return Err(ConfigError::Invalid {
                        setting: "HOMEROOM_READ_STORE",
                        value: redacted(value),
                        expected: "sqlite, sqlite://PATH or postgres://…",
                    })
                }
            },
        };
        let bus = match set(&self.bus) {
            None | Some("in-process" | "inprocess") => BusChoice::InProcess,
            Some(value) if scheme_of(value) == "nats" && has_host(value) => BusChoice::Nats {
                url: value.to_owned(),
            },
            Some(value) => {
                return Err(ConfigError::Invalid {
                    setting: "HOMEROOM_BUS",
                    value: redacted(value),
                    expected: "in-process or nats://HOST:PORT",
                })
            }
        };
        let sms = match set(&self.sms) {
            None | Some("sandbox") => SmsChoice::Sandbox,
            Some("twilio") => SmsChoice::Twilio {
                account_sid: required(
                    &self.twilio_account_sid,
                    "HOMEROOM_TWILIO_ACCOUNT_SID",
                    "with HOMEROOM_SMS=twilio",
                )?,
                auth_token: required(
                    &self.twilio_auth_token,
                    "HOMEROOM_TWILIO_AUTH_TOKEN",
                    "with HOMEROOM_SMS=twilio",
                )?,
                base_url: set(&self.twilio_base_url).map(str::to_owned),
            },
            Some(value) => {
                return Err(ConfigError::Invalid {
                    setting: "HOMEROOM_SMS",
                    value: redacted(value),
                    expected: "sandbox or twilio",
                })
            }
        };
        let email = match set(&self.email) {
            None | Some("sandbox") => EmailChoice::Sandbox,
            Some("smtp") => EmailChoice::Smtp {
                url: required(
                    &self.smtp_url,
                    "HOMEROOM_SMTP_URL",
                    "with HOMEROOM_EMAIL=smtp",
                )?,
                from: required(
                    &self.email_from,
                    "HOMEROOM_EMAIL_FROM",
                    "with HOMEROOM_EMAIL=smtp",
                )?,
            },
            Some(value) => {
                return Err(ConfigError::Invalid {
                    setting: "HOMEROOM_EMAIL",
                    value: redacted(value),
                    expected: "sandbox or smtp",
                })
            }
        };
        let translator = match set(&self.translator) {
            None | Some("none") => TranslatorChoice::None,
            Some("libretranslate") => TranslatorChoice::LibreTranslate {
                url: required(
                    &self.translate_url,
                    "HOMEROOM_TRANSLATE_URL",
                    "with HOMEROOM_TRANSLATOR=libretranslate",
                )?,
                api_key: set(&self.translate_api_key).map(str::to_owned),
            },
            Some(value) => {
                return Err(ConfigError::Invalid {
                    setting: "HOMEROOM_TRANSLATOR",
                    value: redacted(value),
                    expected: "none or libretranslate",
                })
            }
        };
        Ok(Backends {
            store,
            read_store,
            bus,
            sms,
            email,
            translator,
        })
    }

    fn store(&self) -> Result<StoreChoice, ConfigError> {
        let default = || StoreChoice::Sqlite(self.data_dir.join("events.sqlite"));
        let Some(value) = set(&self.store) else {
            return Ok(default());
        };
        if let Some(path) = sqlite_path(value) {
            return Ok(path.map_or_else(default, StoreChoice::Sqlite));
        }
        if is_postgres(value) {
            return Ok(StoreChoice::Postgres {
                url: value.to_owned(),
                schema: self.pg_schema(),
            });
        }
        match scheme_of(value).as_str() {
            "kurrentdb" | "esdb" | "kurrentdb+discover" | "esdb+discover" => {
                Ok(StoreChoice::KurrentDb {
                    url: value.to_owned(),
                })
            }
            _ => Err(ConfigError::Invalid {
                setting: "HOMEROOM_STORE",
                value: redacted(value),
                expected: "sqlite, sqlite://PATH, postgres://… or kurrentdb://…",
            }),
        }
    }
}

/// `Some(None)` for `sqlite` (the default file), `Some(Some(path))` for `sqlite://PATH`,
/// `None` for anything else.
fn sqlite_path(value: &str) -> Option<Option<PathBuf>> {
    if value.eq_ignore_ascii_case("sqlite") {
        return Some(None);
    }
    value
        .strip_prefix("sqlite://")
        .or_else(|| value.strip_prefix("sqlite:"))
        .map(|path| Some(PathBuf::from(path)))
}

fn is_postgres(value: &str) -> bool {
    matches!(scheme_of(value).as_str(), "postgres" | "postgresql")
}

fn required(
    value: &Option<String>,
    setting: &'static str,
    because: &'static str,
) -> Result<String, ConfigError> {
    set(value)
        .map(str::to_owned)
        .ok_or(ConfigError::Missing { setting, because })
}

fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn scheme_of(value: &str) -> String {
    value
        .split_once("://")
        .map_or(value, |(scheme, _)| scheme)
        .to_ascii_lowercase()
}

/// Whether a `scheme://[user:pass@]host[:port]…` URL names a host: `nats://` alone would
/// be accepted by the client and fail later on a name lookup of nothing.
fn has_host(value: &str) -> bool {
    let rest = value.split_once("://").map_or("", |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_and_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_and_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host_and_port.split(':').next().unwrap_or(""),
    };
    !host.is_empty()
}

/// Refuses a value that is not an `http://` or `https://` base URL with a host: a public
/// URL every status callback is signed against, or a provider's base URL, is better
/// refused at start than failing at the first message.
fn http_url(setting: &'static str, value: &str) -> Result<(), ConfigError> {
    let host = value
        .split_once("://")
        .filter(|(scheme, _)| matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https"))
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""));
    match host {
        // A base URL: paths are appended to it, so a query or fragment would end up in
        // the middle of every URL (and no webhook signature would match).
        Some(host)
            if !host.is_empty()
                && !value
                    .chars()
                    .any(|c| c.is_whitespace() || c == '?' || c == '#') =>
        {
            Ok(())
        }
        _ => Err(ConfigError::Invalid {
            setting,
            value: redacted(value),
            expected: "an http:// or https:// base URL with a host (no query or fragment)",
        }),
    }
}

/// A value as it may be shown: a URL's scheme only, never its credentials.
fn redacted(value: &str) -> String {
    if value.contains("://") {
        format!("{}://…", scheme_of(value))
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "figment::Jail's closures return figment::Error, which is large"
)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_environment_and_flags_override_in_that_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "homeroom.toml",
                "listen = \"0.0.0.0:9000\"\ndata_dir = \"/from/file\"\nsms = \"sandbox\"\n",
            )?;
            let mut args = InstanceArgs {
                config: Some("homeroom.toml".into()),
                ..InstanceArgs::default()
            };
            let settings = Settings::load(&args).unwrap();
            assert_eq!(settings.listen, "0.0.0.0:9000");
            assert_eq!(settings.data_dir, PathBuf::from("/from/file"));
            jail.set_env("HOMEROOM_DATA_DIR", "/from/env");
            assert_eq!(
                Settings::load(&args).unwrap().data_dir,
                PathBuf::from("/from/env")
            );
            args.data_dir = Some("/from/flag".into());
            let settings = Settings::load(&args).unwrap();
            assert_eq!(settings.data_dir, PathBuf::from("/from/flag"));
            assert_eq!(settings.listen, "0.0.0.0:9000");
            assert_eq!(settings.jwt_key_file(), PathBuf::from("/from/flag/jwt.key"));
            Ok(())
        });
    }

    #[test]
    fn an_unknown_homeroom_variable_is_named_and_every_setting_is_known() {
        let names = [
            "HOMEROOM_STOR",
            "HOMEROOM_STORE",
            "HOMEROOM_CONFIG",
            "HOMEROOM_nats_ack_wait",
            "PATH",
            "HOMEROOMX",
        ]
        .map(std::ffi::OsString::from);
        assert_eq!(unknown_variables(names.into_iter()), vec!["HOMEROOM_STOR"]);
        let every = KEYS
            .iter()
            .map(|k| std::ffi::OsString::from(format!("HOMEROOM_{}", k.to_uppercase())));
        assert!(unknown_variables(every).is_empty());
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "lisen = \"x\"\n")?;
            let args = InstanceArgs {
                config: Some("bad.toml".into()),
                ..InstanceArgs::default()
            };
            assert!(matches!(Settings::load(&args), Err(ConfigError::Load(_))));
            Ok(())
        });
    }

    #[test]
    fn every_backend_is_chosen_by_its_setting_and_credentials_are_never_echoed() {
        let mut settings = Settings {
            store: Some("postgres://app:secret@db/homeroom".into()),
            ..Settings::default()
        };
        let backends = settings.backends().unwrap();
        assert_eq!(
            backends.store,
            StoreChoice::Postgres {
                url: "postgres://app:secret@db/homeroom".into(),
                schema: "homeroom".into()
            }
        );
        assert_eq!(
            backends.read_store,
            ReadStoreChoice::Postgres {
                url: "postgres://app:secret@db/homeroom".into(),
                schema: "homeroom_read".into()
            },
            "read models default to the store's database"
        );
        settings.store = Some("mysql://app:secret@db/x".into());
        let text = settings.backends().unwrap_err().to_string();
        assert!(
            text.contains("HOMEROOM_STORE") && !text.contains("secret"),
            "{text}"
        );
        settings.store = Some("kurrentdb://localhost:2113".into());
        let backends = settings.backends().unwrap();
        assert!(matches!(backends.store, StoreChoice::KurrentDb { .. }));
        assert_eq!(
            backends.read_store,
            ReadStoreChoice::Sqlite(PathBuf::from("./homeroom-data/read.sqlite"))
        );
        settings.store = Some("sqlite".into());
        settings.bus = Some("nats://127.0.0.1:4222".into());
        assert!(matches!(
            settings.backends().unwrap().bus,
            BusChoice::Nats { .. }
        ));
        settings.sms = Some("twilio".into());
        assert!(matches!(
            settings.backends(),
            Err(ConfigError::Missing {
                setting: "HOMEROOM_TWILIO_ACCOUNT_SID",
                ..
            })
        ));
        settings.twilio_account_sid = Some("AC1".into());
        settings.twilio_auth_token = Some("token".into());
        assert!(matches!(
            settings.backends().unwrap().sms,
            SmsChoice::Twilio { .. }
        ));
        settings.sms = Some("pigeon".into());
        assert!(matches!(
            settings.backends(),
            Err(ConfigError::Invalid { .. })
        ));
        settings.sms = None;
        settings.email = Some("smtp".into());
        assert!(matches!(
            settings.backends(),
            Err(ConfigError::Missing {
                setting: "HOMEROOM_SMTP_URL",
                ..
            })
        ));
        settings.email = None;
        assert_eq!(
            settings.backends().unwrap().translator,
            TranslatorChoice::None
        );
        settings.translator = Some("libretranslate".into());
        assert!(matches!(
            settings.backends(),
            Err(ConfigError::Missing {
                setting: "HOMEROOM_TRANSLATE_URL",
                ..
            })
        ));
        settings.translate_url = Some("http://127.0.0.1:5000".into());
        assert_eq!(
            settings.backends().unwrap().translator,
            TranslatorChoice::LibreTranslate {
                url: "http://127.0.0.1:5000".into(),
                api_key: None
            }
        );
        settings.translator = Some("babelfish".into());
        assert!(matches!(
            settings.backends(),
            Err(ConfigError::Invalid {
                setting: "HOMEROOM_TRANSLATOR",
                ..
            })
        ));
    }

    #[test]
    fn urls_and_waits_that_cannot_work_are_refused_at_start() {
        let invalid = |settings: &Settings| match settings.backends() {
            Err(ConfigError::Invalid { setting, .. }) => setting,
            other => panic!("expected a refusal, got {other:?}"),
        };
        for bad in [
            "not a url",
            "::bad",
            "ftp://x",
            "https://",
            "http:// spaced.example",
            "https://homeroom.example.org/?x=1",
            "https://homeroom.example.org/#top",
        ] {
            let settings = Settings {
                public_url: Some(bad.into()),
                ..Settings::default()
            };
            assert_eq!(invalid(&settings), "HOMEROOM_PUBLIC_URL", "{bad}");
            let settings = Settings {
                twilio_base_url: Some(bad.into()),
                ..Settings::default()
            };
            assert_eq!(invalid(&settings), "HOMEROOM_TWILIO_BASE_URL", "{bad}");
        }
        let settings = Settings {
            nats_ack_wait: Some(0),
            ..Settings::default()
        };
        assert_eq!(invalid(&settings), "HOMEROOM_NATS_ACK_WAIT");
        for bad in ["nats://", "nats://user:pass@", "nats://:4222", "nats:///x"] {
            let settings = Settings {
                bus: Some(bad.into()),
                ..Settings::default()
            };
            assert_eq!(invalid(&settings), "HOMEROOM_BUS", "{bad}");
        }
        for good in [
            "nats://127.0.0.1:4222",
            "nats://u:p@nats.example:4222",
            "nats://[::1]:4222",
        ] {
            let settings = Settings {
                bus: Some(good.into()),
                ..Settings::default()
            };
            assert!(settings.backends().is_ok(), "{good}");
        }
        let settings = Settings {
            pg_pool: Some(1),
            ..Settings::default()
        };
        assert_eq!(invalid(&settings), "HOMEROOM_PG_POOL");
        let fine = Settings {
            public_url: Some("https://homeroom.example.org/base".into()),
            twilio_base_url: Some("http://127.0.0.1:18150".into()),
            nats_ack_wait: Some(30),
            pg_pool: Some(4),
            ..Settings::default()
        };
        assert!(fine.backends().is_ok());
    }
}
