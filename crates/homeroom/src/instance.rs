//! The composition root: opens what the settings choose (event store, read models,
//! bus, channels) and wires the services over them. Every subcommand that needs the
//! instance opens it here, so `serve`, `worker`, `projections` and `import` always agree.

use crate::config::{
    Backends, BusChoice, EmailChoice, ReadStoreChoice, Settings, SmsChoice, StoreChoice,
    TranslatorChoice,
};
use crate::run::RunError;
use homeroom_app::CommandService;
use homeroom_bus::inprocess::{InProcessConfig, InProcessQueue};
use homeroom_bus::WorkQueue;
use homeroom_bus_nats::{NatsBus, NatsConfig};
use homeroom_channels::sandbox::{Sandbox, Untranslated};
use homeroom_channels::webhooks::SmsWebhooks;
use homeroom_channels::{EmailSender, SmsSender, Translator};
use homeroom_delivery::worker::Channels;
use homeroom_email_smtp::{SmtpConfig, SmtpEmail};
use homeroom_eventstore::EventStore;
use homeroom_projections::{models, ProjectionRuntime, ReadDb, RuntimeConfig};
use homeroom_sms_twilio::{TwilioConfig, TwilioSms, TwilioWebhooks};
use homeroom_store_kurrentdb::{KurrentConfig, KurrentStore};
use homeroom_store_postgres::PgStore;
use homeroom_store_sqlite::SqliteStore;
use homeroom_translate_libre::{LibreTranslate, LibreTranslateConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The event store, by engine, so it can be closed properly.
#[derive(Clone)]
pub enum StoreHandle {
    /// The embedded SQLite file.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PgStore),
    /// KurrentDB.
    Kurrent(KurrentStore),
}

impl StoreHandle {
    /// The store behind the port.
    pub fn shared(&self) -> Arc<dyn EventStore> {
        match self {
            StoreHandle::Sqlite(s) => Arc::new(s.clone()),
            StoreHandle::Postgres(s) => Arc::new(s.clone()),
            StoreHandle::Kurrent(s) => Arc::new(s.clone()),
        }
    }

    /// Commits what was accepted and closes the connections.
    pub async fn close(&self) {
        match self {
            StoreHandle::Sqlite(s) => s.close().await,
            StoreHandle::Postgres(s) => s.close().await,
            StoreHandle::Kurrent(_) => {}
        }
    }
}

/// How delivery work reaches the reactor and the workers.
pub enum Bus {
    /// Queues in this process, their checkpoints in `<data-dir>/queues`.
    InProcess {
        /// Where the queue checkpoints live.
        dir: PathBuf,
    },
    /// NATS JetStream.
    Nats(Arc<NatsBus>),
}

/// The durable consumer the reactors of a deployment share on NATS.
pub const REACTOR_CONSUMER: &str = "homeroom-reactor";
/// The durable consumer the delivery workers of a deployment share on NATS.
pub const WORKER_CONSUMER: &str = "homeroom-delivery";

impl Bus {
    /// The reactor's queue: every event (the reactor picks what it reacts to).
    pub async fn reactor_queue(
        &self,
        store: Arc<dyn EventStore>,
    ) -> Result<Arc<dyn WorkQueue>, RunError> {
        self.queue(
            store,
            "reactor",
            homeroom_delivery::reactor::REACTS_TO,
            REACTOR_CONSUMER,
            format!("{}.>", homeroom_bus::SUBJECT_PREFIX),
        )
        .await
    }

    /// The workers' queue: `delivery_queued`.
    pub async fn worker_queue(
        &self,
        store: Arc<dyn EventStore>,
    ) -> Result<Arc<dyn WorkQueue>, RunError> {
        self.queue(
            store,
            "deliveries",
            homeroom_delivery::worker::WORKS_ON,
            WORKER_CONSUMER,
            homeroom_bus::filter_for("delivery", "delivery_queued"),
        )
        .await
    }

    /// A queue of the `types` events: in process (its checkpoint named `name`), or the
    /// shared NATS consumer `durable` filtered by `filter`.
    async fn queue(
        &self,
        store: Arc<dyn EventStore>,
        name: &str,
        types: &[&'static str],
        durable: &str,
        filter: String,
    ) -> Result<Arc<dyn WorkQueue>, RunError> {
        match self {
            Bus::InProcess { dir } => Ok(Arc::new(
                InProcessQueue::open(
                    store,
                    &dir.join(format!("{name}.checkpoint")),
                    types,
                    InProcessConfig::default(),
                )
                .map_err(|e| RunError::backend("an in-process queue", e))?,
            )),
            Bus::Nats(bus) => Ok(Arc::new(
                bus.work_queue(durable, &[filter])
                    .await
                    .map_err(|e| RunError::backend("a NATS consumer", e))?,
            )),
        }
    }
}

/// An opened instance: its event store, read models and services.
pub struct Instance {
    /// The settings it was opened with.
    pub settings: Settings,
    /// The backends they chose.
    pub backends: Backends,
    /// The event store.
    pub store: StoreHandle,
    /// Decides and records commands.
    pub commands: Arc<CommandService>,
    /// The read-model database.
    pub read_db: ReadDb,
    /// The projectors.
    pub runtime: ProjectionRuntime,
}

impl Instance {
    /// Opens the event store and the read models (creating what is missing, running
    /// the PostgreSQL migrations).
    pub async fn open(settings: Settings) -> Result<Self, RunError> {
        let backends = settings.backends()?;
        let store = open_store(&settings, &backends).await?;
        let shared = store.shared();
        let commands = Arc::new(CommandService::new(shared.clone(), 100_000));
        let read_db = match &backends.read_store {
            ReadStoreChoice::Sqlite(path) => {
                make_parent(path)?;
                can_write(path)?;
                ReadDb::open(path).await?
            }
            ReadStoreChoice::Postgres { url, schema } => {
                let mut config = homeroom_projections::PgReadConfig::new(url, schema);
                if let Some(pool) = settings.pg_pool {
                    config.max_connections = pool;
                }
                ReadDb::connect_postgres_with(config).await?
            }
        };
        let runtime = ProjectionRuntime::open(
            shared,
            read_db.clone(),
            models::all(),
            RuntimeConfig::for_engine(read_db.engine()),
        )
        .await?;
        // The key and the queues live here; made only once the stores answered, so a
        // PostgreSQL URL that fails leaves no empty directory behind.
        make_dir(&settings.data_dir)?;
        Ok(Self {
            settings,
            backends,
            store,
            commands,
            read_db,
            runtime,
        })
    }

    /// Opens the event store alone, for the commands that only read the log (an
    /// auditor's `audit verify` where no read models were ever built).
    pub async fn open_log(settings: &Settings) -> Result<StoreHandle, RunError> {
        open_store(settings, &settings.backends()?).await
    }

    /// Whether the settings' read models exist (were ever built), found without
    /// creating them.
    pub async fn read_models_exist(settings: &Settings) -> Result<bool, RunError> {
        match settings.backends()?.read_store {
            ReadStoreChoice::Sqlite(path) => Ok(path.exists()),
            ReadStoreChoice::Postgres { url, schema } => ReadDb::postgres_holds(&url, &schema)
                .await
                .map_err(|e| RunError::backend("the PostgreSQL read models", e)),
        }
    }

    /// The store behind the port.
    pub fn shared_store(&self) -> Arc<dyn EventStore> {
        self.store.shared()
    }

    /// What the event store is, for the banner.
    pub fn describe_store(&self) -> String {
        match &self.backends.store {
            StoreChoice::Sqlite(path) => format!("SQLite {}", absolute(path).display()),
            StoreChoice::Postgres { schema, .. } => format!("PostgreSQL, schema {schema}"),
            StoreChoice::KurrentDb { .. } => "KurrentDB".to_owned(),
        }
    }

    /// What holds the read models, for the banner.
    pub fn describe_read_store(&self) -> String {
        match &self.backends.read_store {
            ReadStoreChoice::Sqlite(path) => format!("SQLite {}", absolute(path).display()),
            ReadStoreChoice::Postgres { schema, .. } => format!("PostgreSQL, schema {schema}"),
        }
    }

    /// Checks that the settings' bus answers, creating nothing (NATS: the server and its
    /// JetStream; the in-process bus always does).
    ///
    /// # Errors
    /// [`RunError::Backend`] naming NATS.
    pub async fn check_bus(settings: &Settings) -> Result<(), RunError> {
        match settings.backends()?.bus {
            BusChoice::InProcess => Ok(()),
            BusChoice::Nats { url } => NatsBus::check_reachable(&url)
                .await
                .map_err(|e| RunError::backend("NATS", e)),
        }
    }

    /// The bus the settings choose (connecting to NATS and creating its stream).
    pub async fn bus(&self) -> Result<Bus, RunError> {
        match &self.backends.bus {
            BusChoice::InProcess => Ok(Bus::InProcess {
                dir: self.settings.data_dir.join("queues"),
            }),
            BusChoice::Nats { url } => {
                let mut config = NatsConfig::default();
                if let Some(stream) = self.settings.nats_stream.as_deref().map(str::trim) {
                    config.stream = stream.to_owned();
                }
                if let Some(prefix) = self.settings.nats_prefix.as_deref().map(str::trim) {
                    config.subject_prefix = prefix.to_owned();
                }
                // 0 is refused with the other settings (`Settings::backends`).
                if let Some(seconds) = self.settings.nats_ack_wait {
                    config.ack_wait = std::time::Duration::from_secs(seconds);
                }
                Ok(Bus::Nats(Arc::new(
                    NatsBus::connect(url, config)
                        .await
                        .map_err(|e| RunError::backend("NATS", e))?,
                )))
            }
        }
    }

    /// The machine translator the settings choose: the workers translate deliveries
    /// with it, and the webhooks the answers that tell a family their reply was not
    /// delivered.
    pub fn translator(&self) -> Result<Arc<dyn Translator>, RunError> {
        Ok(match &self.backends.translator {
            TranslatorChoice::None => Arc::new(Untranslated),
            TranslatorChoice::LibreTranslate { url, api_key } => {
                let mut config = LibreTranslateConfig::new(url);
                if let Some(key) = api_key {
                    config = config.with_api_key(key);
                }
                Arc::new(
                    LibreTranslate::new(config)
                        .map_err(|e| RunError::backend("LibreTranslate", e))?,
                )
            }
        })
    }

    /// The providers the settings choose, for delivery workers.
    pub fn channels(&self) -> Result<Channels, RunError> {
        let sandbox = Arc::new(Sandbox::new());
        let sms: Arc<dyn SmsSender> = match &self.backends.sms {
            SmsChoice::Sandbox => sandbox.clone(),
            SmsChoice::Twilio {
                account_sid,
                auth_token,
                base_url,
            } => {
                let mut config = TwilioConfig::new(account_sid, auth_token);
                if let Some(base) = base_url {
                    config = config.with_base_url(base);
                }
                Arc::new(TwilioSms::new(config).map_err(|e| RunError::backend("Twilio", e))?)
            }
        };
        let email: Arc<dyn EmailSender> = match &self.backends.email {
            EmailChoice::Sandbox => sandbox,
            EmailChoice::Smtp { url, from } => Arc::new(
                SmtpEmail::new(&SmtpConfig::new(url, from))
                    .map_err(|e| RunError::backend("SMTP", e))?,
            ),
        };
        let translator = self.translator()?;
        Ok(Channels {
            sms,
            email,
            translator,
            phones: Arc::new(self.runtime.read_models()),
        })
    }

    /// The SMS provider's webhooks, when one is configured (Twilio: verified with the
    /// auth token, which may be set for the sandbox too, to try inbound texts).
    pub fn webhooks(&self) -> Option<Arc<dyn SmsWebhooks>> {
        match &self.backends.sms {
            SmsChoice::Twilio { auth_token, .. } => {
                Some(Arc::new(TwilioWebhooks::new(auth_token.clone())))
            }
            SmsChoice::Sandbox => self
                .settings
                .twilio_auth_token
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| Arc::new(TwilioWebhooks::new(t)) as Arc<dyn SmsWebhooks>),
        }
    }

    /// Closes the read models, then the store (which commits what it accepted).
    pub async fn close(self) {
        self.read_db.close().await;
        self.store.close().await;
    }
}

/// Opens (creating what is missing, running the PostgreSQL migrations) the event store
/// the settings name.
async fn open_store(settings: &Settings, backends: &Backends) -> Result<StoreHandle, RunError> {
    Ok(match &backends.store {
        StoreChoice::Sqlite(path) => {
            make_parent(path)?;
            can_write(path)?;
            StoreHandle::Sqlite(SqliteStore::open(path).await?)
        }
        StoreChoice::Postgres { url, schema } => {
            let mut config = homeroom_store_postgres::PgStoreConfig::new(url, schema);
            if let Some(pool) = settings.pg_pool {
                config.max_connections = pool;
            }
            StoreHandle::Postgres(
                PgStore::connect_with(config)
                    .await
                    .map_err(|e| RunError::backend("the PostgreSQL event store", e))?,
            )
        }
        StoreChoice::KurrentDb { url } => StoreHandle::Kurrent(
            KurrentStore::connect(url, KurrentConfig::default())
                .await
                .map_err(|e| RunError::backend("the KurrentDB event store", e))?,
        ),
    })
}

/// Creates `dir` (and its parents) readable by the owner only, as the token key is: it
/// holds every message a district ever sent. A directory that exists keeps its mode.
fn make_dir(dir: &Path) -> Result<(), RunError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| RunError::DataDir {
        path: dir.to_owned(),
        source,
    })
}

/// Opens (creating it, as SQLite would) the database file at `path` for writing, so a
/// file or directory the process may not write is reported with its path and the OS's
/// reason, not as SQLite's "unable to open database file".
fn can_write(path: &Path) -> Result<(), RunError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    // A new database file is the owner's only (SQLite gives its WAL the same mode).
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map(drop)
        .map_err(|source| RunError::DataDir {
            path: path.to_owned(),
            source,
        })
}

/// Makes the directory a file at `path` goes in.
fn make_parent(path: &Path) -> Result<(), RunError> {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or(Ok(()), make_dir)
}

/// `path` made absolute for messages, as far as the OS allows.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
