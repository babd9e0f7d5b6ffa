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
    "jwt_key_file",
];

/// The settings of one instance, as resolved from every source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the API listens (`127.0.0.1:8080`; port 0 picks a free one).
    pub listen: String,
    /// Where the instance keeps its data (`./homeroom-data`).
    pub data_dir: PathBuf,
    /// The event store: unset or `sqlite` for `<data_dir>/events.sqlite`, or
    /// `sqlite://PATH`. PostgreSQL and KurrentDB are not available yet.
    pub store: Option<String>,
    /// Where read models live: unset (the default) only, for now.
    pub read_store: Option<String>,
    /// The delivery bus: unset or `in-process`; NATS is not available yet.
    pub bus: Option<String>,
    /// The SMS channel: `sandbox` (default); `twilio` is not available yet.
    pub sms: Option<String>,
    /// Twilio account SID (with `sms = "twilio"`).
    pub twilio_account_sid: Option<String>,
    /// Twilio auth token (with `sms = "twilio"`).
    pub twilio_auth_token: Option<String>,
    /// Twilio API base URL (default Twilio's).
    pub twilio_base_url: Option<String>,
    /// The email channel: `sandbox` (default); `smtp` is not available yet.
    pub email: Option<String>,
    /// SMTP server URL (with `email = "smtp"`).
    pub smtp_url: Option<String>,
    /// The From address of email (with `email = "smtp"`).
    pub email_from: Option<String>,
    /// The external base URL status callbacks go to.
    pub public_url: Option<String>,
    /// The token signing key (default `<data_dir>/jwt.key`).
    pub jwt_key_file: Option<PathBuf>,
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
            jwt_key_file: None,
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
    /// The event store: `sqlite` (default: <data-dir>/events.sqlite) or `sqlite://PATH` [env: HOMEROOM_STORE].
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Where read models live (default: the store's database) [env: HOMEROOM_READ_STORE].
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_store: Option<String>,
    /// The delivery bus: `in-process` (default) [env: HOMEROOM_BUS].
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// The SMS channel: `sandbox` (default) [env: HOMEROOM_SMS].
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
    /// The email channel: `sandbox` (default) [env: HOMEROOM_EMAIL].
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
    /// The token signing key (default: <data-dir>/jwt.key) [env: HOMEROOM_JWT_KEY_FILE].
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_key_file: Option<PathBuf>,
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
    /// A backend this version does not have yet.
    #[error("{setting} = {value}: not available yet; this version runs the embedded default (unset the setting to use it)")]
    NotAvailableYet {
        /// The setting, as its environment variable.
        setting: &'static str,
        /// The value's kind (a URL's scheme, never its credentials).
        value: String,
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

    /// The event store to open, once every setting this version cannot honour yet has
    /// been refused, so a deployment asking for PostgreSQL, NATS, Twilio or SMTP learns
    /// it at start, not at the first message.
    ///
    /// # Errors
    /// [`ConfigError::NotAvailableYet`] for PostgreSQL, KurrentDB, NATS, Twilio, SMTP
    /// or a separate read store; [`ConfigError::Invalid`] for values no version knows.
    pub fn check_supported(&self) -> Result<StoreChoice, ConfigError> {
        let store = self.store()?;
        if let Some(value) = set(&self.read_store) {
            return Err(ConfigError::NotAvailableYet {
                setting: "HOMEROOM_READ_STORE",
                value: redacted(value),
            });
        }
        if let Some(value) = set(&self.bus) {
            if !matches!(value, "in-process" | "inprocess") {
                return Err(not_yet_or_invalid(
                    "HOMEROOM_BUS",
                    value,
                    "nats",
                    "in-process",
                ));
            }
        }
        for (setting, value, later) in [
            ("HOMEROOM_SMS", &self.sms, "twilio"),
            ("HOMEROOM_EMAIL", &self.email, "smtp"),
        ] {
            if let Some(value) = set(value) {
                if value != "sandbox" {
                    return Err(not_yet_or_invalid(setting, value, later, "sandbox"));
                }
            }
        }
        Ok(store)
    }

    fn store(&self) -> Result<StoreChoice, ConfigError> {
        let default = || StoreChoice::Sqlite(self.data_dir.join("events.sqlite"));
        let Some(value) = set(&self.store) else {
            return Ok(default());
        };
        if value.eq_ignore_ascii_case("sqlite") {
            return Ok(default());
        }
        if let Some(path) = value
            .strip_prefix("sqlite://")
            .or_else(|| value.strip_prefix("sqlite:"))
        {
            return Ok(StoreChoice::Sqlite(PathBuf::from(path)));
        }
        match scheme_of(value).as_str() {
            "postgres" | "postgresql" | "kurrentdb" | "esdb" | "kurrentdb+discover"
            | "esdb+discover" => Err(ConfigError::NotAvailableYet {
                setting: "HOMEROOM_STORE",
                value: redacted(value),
            }),
            _ => Err(ConfigError::Invalid {
                setting: "HOMEROOM_STORE",
                value: redacted(value),
                expected: "sqlite or sqlite://PATH",
            }),
        }
    }
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

/// A value as it may be shown: a URL's scheme only, never its credentials.
fn redacted(value: &str) -> String {
    if value.contains("://") {
        format!("{}://…", scheme_of(value))
    } else {
        value.to_owned()
    }
}

fn not_yet_or_invalid(
    setting: &'static str,
    value: &str,
    later: &str,
    expected: &'static str,
) -> ConfigError {
    if scheme_of(value) == later {
        ConfigError::NotAvailableYet {
            setting,
            value: redacted(value),
        }
    } else {
        ConfigError::Invalid {
            setting,
            value: redacted(value),
            expected,
        }
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
    fn other_backends_are_refused_clearly_without_echoing_credentials() {
        let mut settings = Settings {
            store: Some("postgres://app:secret@db/homeroom".into()),
            ..Settings::default()
        };
        let err = settings.check_supported().unwrap_err();
        assert!(matches!(err, ConfigError::NotAvailableYet { .. }));
        let text = err.to_string();
        assert!(
            text.contains("not available yet") && !text.contains("secret"),
            "{text}"
        );
        settings.store = Some("sqlite".into());
        assert_eq!(
            settings.check_supported().unwrap(),
            StoreChoice::Sqlite(PathBuf::from("./homeroom-data/events.sqlite"))
        );
        settings.sms = Some("twilio".into());
        assert!(matches!(
            settings.check_supported(),
            Err(ConfigError::NotAvailableYet {
                setting: "HOMEROOM_SMS",
                ..
            })
        ));
        settings.sms = Some("pigeon".into());
        assert!(matches!(
            settings.check_supported(),
            Err(ConfigError::Invalid { .. })
        ));
    }
}
