//! What each subcommand does, on the settings `config` resolved.

use crate::config::{ConfigError, InstanceArgs, Settings};
use crate::instance::{absolute, Bus, Instance, StoreHandle};
use homeroom_api::import::{self, ImportError, RowStatus};
use homeroom_api::webhooks::Webhooks;
use homeroom_api::{auth::KeyFileError, auth::SignError, ApiState, Caller, Claims, TokenKeys};
use homeroom_app::QueryService;
use homeroom_bus::relay::{Relay, RelayConfig};
use homeroom_delivery::reactor::{Reactor, ReactorConfig};
use homeroom_delivery::worker::{Worker, WorkerConfig};
use homeroom_domain::{Actor, DistrictId, IdError, PersonId};
use homeroom_eventstore::StoreError;
use homeroom_projections::{ProjectionError, RebuildTarget};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The settings are wrong or ask for what this version lacks.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory cannot be created.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The token signing key cannot be loaded or created.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The event store cannot be opened or read.
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    /// An outside system (PostgreSQL, KurrentDB, NATS, Twilio, SMTP) cannot be used.
    #[error("{what}: {source}")]
    Backend {
        /// Which.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The read models cannot be opened, built or rebuilt.
    #[error("read models: {0}")]
    Projections(#[from] ProjectionError),
    /// `audit verify` could not read the log.
    #[error(transparent)]
    Verify(#[from] homeroom_app::verification::VerifyError),
    /// An audit export holds no event: no export of a district is empty, so this is a
    /// failed export (a full disk, a wrong redirect), not evidence that anything holds.
    #[error("{} holds no exported event: nothing to check", file.display())]
    EmptyExport {
        /// The file.
        file: PathBuf,
    },
    /// An audit export cannot be opened.
    #[error("cannot read the export {}: {source}", file.display())]
    ExportFile {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped on an I/O error.
    #[error("server: {0}")]
    Serve(#[source] std::io::Error),
    /// The district is not a district id.
    #[error("--district: {0}")]
    District(#[source] IdError),
    /// The token's identity would not verify.
    #[error("{0}")]
    Identity(#[source] homeroom_api::auth::AuthError),
    /// The token could not be signed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// An operator's command was pointed at an instance that does not exist (a typo in
    /// `--data-dir`, say); it would otherwise report on a new, empty one.
    #[error("no instance at {}: its event log does not exist (is --data-dir right? `homeroom serve` creates one)", path.display())]
    NoInstance {
        /// The event log looked for.
        path: PathBuf,
    },
    /// As [`RunError::NoInstance`], on PostgreSQL: the schema holds no event log (a typo
    /// in `HOMEROOM_PG_SCHEMA`, say). Nothing is created to find that out.
    #[error("no instance in the PostgreSQL schema {schema:?}: it holds no event log (is HOMEROOM_PG_SCHEMA right? `homeroom serve` creates one)")]
    NoPostgresInstance {
        /// The schema looked in.
        schema: String,
    },
    /// Another `serve` already runs the in-process queues of this data directory: two
    /// would both deliver every message and race on the queues' checkpoints.
    #[error("another `homeroom serve` is already serving {} ({holder}); with more than one server, use NATS (HOMEROOM_BUS)", dir.display())]
    AlreadyServed {
        /// The queues' directory.
        dir: PathBuf,
        /// Who holds it, as its lock file says.
        holder: String,
    },
    /// The CSV file cannot be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The CSV file cannot be imported at all.
    #[error("{path}: {source}")]
    Import {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ImportError,
    },
}

impl RunError {
    /// Wraps an outside system's error.
    pub fn backend(
        what: &'static str,
        err: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Backend {
            what,
            source: Box::new(err),
        }
    }
}

/// The token scopes `homeroom token` can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    /// A service (SIS sync, delivery worker) rather than a person.
    System,
}

/// Why a `--ttl` is not a duration.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a duration; use e.g. 90s, 30m, 1h or 7d")]
pub struct BadTtl(String);

/// Reads `90s`, `30m`, `1h`, `7d` or a plain number of seconds.
///
/// # Errors
/// [`BadTtl`] otherwise.
pub fn parse_ttl(text: &str) -> Result<Duration, BadTtl> {
    let bad = || BadTtl(text.to_owned());
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    number
        .checked_mul(seconds)
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

/// An opened instance: its event store, read models and services.
fn settings(args: &InstanceArgs) -> Result<Settings, RunError> {
    Ok(Settings::load(args)?)
}

/// The settings of an instance that must already exist: the commands that inspect or
/// repair one refuse to create an empty one in its place.
async fn existing_instance(args: &InstanceArgs) -> Result<Settings, RunError> {
    let settings = settings(args)?;
    match settings.backends()?.store {
        crate::config::StoreChoice::Sqlite(path) => {
            if !path.exists() {
                return Err(RunError::NoInstance { path });
            }
        }
        crate::config::StoreChoice::Postgres { url, schema } => {
            let holds = homeroom_store_postgres::PgStore::holds_log(&url, &schema)
                .await
                .map_err(|e| RunError::backend("the PostgreSQL event store", e))?;
            if !holds {
                return Err(RunError::NoPostgresInstance { schema });
            }
        }
        // A KurrentDB database is the whole log; there is no name to mistype apart from
        // the URL, which fails to connect.
        crate::config::StoreChoice::KurrentDb { .. } => {}
    }
    Ok(settings)
}

/// Takes the lock that makes this process the only one running the in-process queues
/// of `dir` (held until the returned file is dropped, or the process ends, however it
/// ends). The lock file says which process holds it.
///
/// # Errors
/// [`RunError::AlreadyServed`] when another process holds it; [`RunError::DataDir`]
/// when the file cannot be opened.
fn serve_alone(dir: &Path) -> Result<std::fs::File, RunError> {
    use std::io::{Read, Seek};
    let data_dir = |source| RunError::DataDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(data_dir)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("serve.lock"))
        .map_err(data_dir)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(RunError::AlreadyServed {
                dir: dir.to_owned(),
                holder: if holder.is_empty() {
                    "a process that has not said which".to_owned()
                } else {
                    holder.to_owned()
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(data_dir(e)),
    }
    file.set_len(0).map_err(data_dir)?;
    file.rewind().map_err(data_dir)?;
    write!(file, "pid {}", std::process::id()).map_err(data_dir)?;
    file.flush().map_err(data_dir)?;
    Ok(file)
}

/// How often a `serve` standing by asks for a turn at a schema job ([`SchemaJob`]).
const TURN_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Completes when the relay is to stop: the server stops, or this process no longer
/// holds the relay turn it was given (checked every [`TURN_RETRY`]).
async fn relaying(
    turn: Option<homeroom_store_postgres::SchemaLock>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let lost = async {
        let Some(mut turn) = turn else {
            return std::future::pending::<()>().await;
        };
        loop {
            tokio::time::sleep(TURN_RETRY).await;
            if !turn.is_held().await {
                return;
            }
        }
    };
    tokio::select! {
        () = lost => {}
        _ = stop.wait_for(|stop| *stop) => {}
    }
}

/// A job only one process at a time may do on a PostgreSQL schema.
#[derive(Clone, Copy)]
enum SchemaJob {
    /// Sending its deliveries from the in-process queues (each process would send every
    /// text once).
    Sending,
    /// Copying its log onto NATS (two relays interleave their batches).
    Relaying,
}

impl SchemaJob {
    /// The name of its lock.
    fn lock(self) -> &'static str {
        match self {
            Self::Sending => "in-process-delivery",
            Self::Relaying => "relay",
        }
    }

    /// What the holder does, for the log.
    fn what(self) -> &'static str {
        match self {
            Self::Sending => "sends the schema's deliveries",
            Self::Relaying => "relays the schema's log to NATS",
        }
    }
}

/// Waits for this process's turn to do `job` on `pg`'s schema, held while the returned
/// lock lives; `None` when `stop` came first. The others stand by, asking every
/// [`TURN_RETRY`], and one of them takes over when the holder stops.
async fn schema_turn(
    pg: &homeroom_store_postgres::PgStore,
    job: SchemaJob,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<homeroom_store_postgres::SchemaLock> {
    let mut said = false;
    loop {
        match pg.try_lock_schema(job.lock()).await {
            Ok(Some(turn)) => {
                tracing::info!(schema = pg.schema(), "this server {}", job.what());
                return Some(turn);
            }
            Ok(None) if !said => {
                said = true;
                tracing::info!(
                    schema = pg.schema(),
                    "another `homeroom serve` {}; this one stands by and takes over when it stops",
                    job.what()
                );
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot ask for the turn: {}; asking again", job.what())
            }
        }
        tokio::select! {
            () = tokio::time::sleep(TURN_RETRY) => {}
            _ = stop.wait_for(|stop| *stop) => return None,
        }
    }
}

/// Writes `text` to standard output; a reader that went away (`| head`) ends the
/// output quietly instead of in a panic.
fn print_to_stdout(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// `homeroom serve`.
///
/// # Errors
/// [`RunError`] when the instance cannot be opened or the address bound.
pub async fn serve(listen: Option<String>, args: &InstanceArgs) -> Result<ExitCode, RunError> {
    let mut settings = settings(args)?;
    if let Some(listen) = listen {
        settings.listen = listen;
    }
    let key_file = settings.jwt_key_file();
    // The address first: a wrong or busy one is refused before an instance is created.
    let listener = TcpListener::bind(&settings.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: settings.listen.clone(),
            source,
        })?;
    // The bus next: a start refused for NATS creates no data directory, no schema.
    Instance::check_bus(&settings).await?;
    let instance = Instance::open(settings).await?;
    let keys = TokenKeys::load_or_create(&key_file)?;
    let store = instance.shared_store();
    let head = store.head().await?;
    let bus = instance.bus().await?;
    let _only_server = match &bus {
        Bus::InProcess { dir } => Some(serve_alone(dir)?),
        Bus::Nats(_) => None,
    };
    // The in-process queues send every delivery of the log from this process: two
    // `serve` processes on one PostgreSQL schema (other data directories, other
    // machines) would each send every text. One at a time holds the schema's turn and
    // sends; the others stand by and take over when it stops.
    let one_sender_of = match (&bus, &instance.store) {
        (Bus::InProcess { .. }, StoreHandle::Postgres(pg)) => Some(pg.clone()),
        _ => None,
    };
    let channels = match &bus {
        Bus::InProcess { .. } => Some(instance.channels()?),
        Bus::Nats(_) => None,
    };
    let addr = listener.local_addr().map_err(RunError::Serve)?;

    let queries = Arc::new(QueryService::new(
        instance.commands.clone(),
        instance.runtime.clone(),
    ));
    let mut state = ApiState::new(instance.commands.clone(), queries, keys);
    let translator = instance.translator()?;
    state.webhooks = instance.webhooks().map(|provider| {
        Webhooks::new(
            provider,
            instance.commands.clone(),
            translator,
            instance.settings.public_url.clone(),
        )
    });
    let data_dir = absolute(&instance.settings.data_dir);
    println!("homeroom {}", env!("CARGO_PKG_VERSION"));
    println!("data directory: {}", data_dir.display());
    println!(
        "event store: {} (log head at position {head})",
        instance.describe_store()
    );
    println!("read models: {}", instance.describe_read_store());
    match &bus {
        Bus::InProcess { .. } if one_sender_of.is_some() => {
            println!("bus: in-process (deliveries are sent by one `serve` of the schema at a time)")
        }
        Bus::InProcess { .. } => println!("bus: in-process (deliveries are sent by this process)"),
        Bus::Nats(_) => {
            println!("bus: NATS JetStream (deliveries are sent by `homeroom worker` processes)")
        }
    }
    println!("token key: {}", absolute(&key_file).display());
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, data_dir = %data_dir.display(), "serving the HTTP API; stop with Ctrl-C or SIGTERM");

    // Background work follows the log until the server has answered its last request.
    let (background_stop, _) = tokio::sync::watch::channel(false);
    let stopped = |rx: tokio::sync::watch::Receiver<bool>| async move {
        let mut rx = rx;
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut background = Vec::new();
    background.push(tokio::spawn({
        let runtime = instance.runtime.clone();
        let stop = stopped(background_stop.subscribe());
        async move {
            if let Err(error) = runtime.run(stop).await {
                tracing::error!(%error, "the projectors stopped with an error");
            }
        }
    }));
    if let Bus::Nats(nats) = &bus {
        if instance.settings.relay.unwrap_or(true) {
            let (store, nats) = (store.clone(), nats.clone());
            let mut stop = background_stop.subscribe();
            // On PostgreSQL every node runs a relay, one at a time: two relays copying
            // the log at once interleave their batches on the stream (out of log order,
            // and a batch refused midway can lose events); the others stand by and one
            // takes over when the relaying node stops.
            let one_relay_of = match &instance.store {
                StoreHandle::Postgres(pg) => Some(pg.clone()),
                _ => None,
            };
            background.push(tokio::spawn(async move {
                loop {
                    let turn = match &one_relay_of {
                        Some(pg) => match schema_turn(pg, SchemaJob::Relaying, &mut stop).await {
                            Some(turn) => Some(turn),
                            None => return,
                        },
                        None => None,
                    };
                    let relay = Relay::new(store.clone(), nats.clone(), RelayConfig::default());
                    let ended = relay.run(relaying(turn, stop.clone())).await;
                    if let Err(error) = ended {
                        tracing::error!(%error, "the relay stopped; events are not reaching NATS");
                        return;
                    }
                    if *stop.borrow() || one_relay_of.is_none() {
                        return;
                    }
                    tracing::warn!("this server lost the schema's relay turn; standing by");
                }
            }));
        }
    }
    let reactor = Reactor::new(
        instance.commands.clone(),
        Arc::new(instance.runtime.read_models()),
        ReactorConfig::default(),
    );
    let reactor_queue = bus.reactor_queue(store.clone()).await?;
    let worker = match channels {
        Some(channels) => {
            let worker = Worker::new(
                instance.commands.clone(),
                channels,
                WorkerConfig {
                    public_url: instance.settings.public_url.clone(),
                    ..WorkerConfig::default()
                },
            );
            Some((worker, bus.worker_queue(store.clone()).await?))
        }
        None => None,
    };
    background.push(tokio::spawn({
        let mut standing_by = background_stop.subscribe();
        let (reactor_stop, worker_stop) = (
            stopped(background_stop.subscribe()),
            stopped(background_stop.subscribe()),
        );
        async move {
            let _turn = match one_sender_of {
                Some(pg) => match schema_turn(&pg, SchemaJob::Sending, &mut standing_by).await {
                    Some(turn) => Some(turn),
                    None => return,
                },
                None => None,
            };
            let sending = async {
                if let Some((worker, queue)) = worker {
                    worker.run(queue, worker_stop).await;
                }
            };
            tokio::join!(reactor.run(reactor_queue, reactor_stop), sending);
        }
    }));

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new connections; finishing requests in flight");
        let _ = stopping_tx.send(());
    };
    let mut server = tokio::spawn(homeroom_api::serve(listener, state, shutdown));
    let grace_over = async {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let served = tokio::select! {
        joined = &mut server => joined.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        () = grace_over => {
            tracing::warn!("requests still in flight after {} s; stopping anyway", SHUTDOWN_GRACE.as_secs());
            server.abort();
            Ok(())
        }
    };
    let _ = background_stop.send(true);
    for task in background {
        if let Err(error) = task.await {
            tracing::error!(%error, "a background task failed");
        }
    }
    instance.close().await;
    served.map_err(RunError::Serve)?;
    tracing::info!("stopped; the event store is closed");
    Ok(ExitCode::SUCCESS)
}

/// `homeroom worker`: delivery workers on NATS, until SIGTERM or Ctrl-C (the batch in
/// hand is finished, then the process exits 0).
///
/// # Errors
/// [`RunError`] when the instance cannot be opened, or the bus is the in-process one
/// (whose workers run inside `serve`).
pub async fn worker(concurrency: usize, args: &InstanceArgs) -> Result<ExitCode, RunError> {
    // Refused before anything is opened: a worker needs NATS, and the instance its
    // outcomes are recorded in (one it created here would record them where no server
    // reads them).
    if matches!(
        settings(args)?.backends()?.bus,
        crate::config::BusChoice::InProcess
    ) {
        return Err(RunError::Config(ConfigError::Missing {
            setting: "HOMEROOM_BUS",
            because: "to nats://… for separate worker processes (with the in-process bus, `homeroom serve` sends deliveries itself)",
        }));
    }
    let instance = Instance::open(existing_instance(args).await?).await?;
    let bus = instance.bus().await?;
    let queue = bus.worker_queue(instance.shared_store()).await?;
    let worker = Worker::new(
        instance.commands.clone(),
        instance.channels()?,
        WorkerConfig {
            batch: concurrency.max(1),
            public_url: instance.settings.public_url.clone(),
            ..WorkerConfig::default()
        },
    );
    println!(
        "homeroom worker {}: taking deliveries from NATS",
        env!("CARGO_PKG_VERSION")
    );
    let _ = std::io::stdout().flush();
    worker.run(queue, shutdown_signal()).await;
    instance.close().await;
    tracing::info!("worker stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// `homeroom token`.
///
/// # Errors
/// [`RunError`] when the identity is invalid or the key cannot be loaded.
pub fn token(
    district: &str,
    subject: &str,
    scope: Option<Scope>,
    ttl: Duration,
    args: &InstanceArgs,
) -> Result<ExitCode, RunError> {
    let district = DistrictId::parse(district).map_err(RunError::District)?;
    let claims = Claims::new(&district, subject, scope == Some(Scope::System), ttl);
    Caller::from_claims(&claims).map_err(RunError::Identity)?;
    let settings = Settings::load(args)?;
    let keys = TokenKeys::load_or_create(&settings.jwt_key_file())?;
    println!("{}", keys.issue(&claims)?);
    Ok(ExitCode::SUCCESS)
}

/// `homeroom import roles`.
///
/// # Errors
/// [`RunError`] when the file or the instance cannot be read; rejected rows are reported
/// and give exit code 2.
pub async fn import_roles(
    file: &Path,
    district: &str,
    actor: Option<&str>,
    key: Option<uuid::Uuid>,
    args: &InstanceArgs,
) -> Result<ExitCode, RunError> {
    let district = DistrictId::parse(district).map_err(RunError::District)?;
    let actor = match actor {
        None => Actor::System("homeroom-import".into()),
        Some(subject) => match uuid::Uuid::parse_str(subject) {
            Ok(id) => Actor::Person(PersonId::new(id)),
            Err(_) => Actor::System(subject.to_owned()),
        },
    };
    let text = std::fs::read(file).map_err(|source| RunError::ReadFile {
        path: file.to_owned(),
        source,
    })?;
    let rows = import::parse_role_assignments(&text).map_err(|source| RunError::Import {
        path: file.to_owned(),
        source,
    })?;
    let instance = Instance::open(settings(args)?).await?;

    let bar = ProgressBar::new(rows.len() as u64);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} rows ({per_sec}, {eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let caller = Caller {
        district,
        actor,
        expires_at: None,
    };
    let report =
        import::import_rows(&instance.commands, &caller, key, rows, None, |_| bar.inc(1)).await;
    bar.finish_and_clear();
    instance.close().await;

    println!(
        "{}: {} rows, {} accepted, {} rejected",
        file.display(),
        report.rows.len(),
        report.accepted,
        report.rejected
    );
    for row in report
        .rows
        .iter()
        .filter(|r| r.status == RowStatus::Rejected)
    {
        println!(
            "  row {}: {}: {}",
            row.row,
            row.code.as_deref().unwrap_or("rejected"),
            row.detail.as_deref().unwrap_or("")
        );
    }
    Ok(if report.rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// `homeroom projections status`.
///
/// # Errors
/// [`RunError`] when the instance cannot be opened.
pub async fn projections_status(json: bool, args: &InstanceArgs) -> Result<ExitCode, RunError> {
    let settings = existing_instance(args).await?;
    if !Instance::read_models_exist(&settings).await? {
        // Say so rather than create read models that nothing applies the log to.
        let log = Instance::open_log(&settings).await?;
        let head = log.shared().head().await;
        log.close().await;
        eprintln!(
            "no read models here yet: nothing has applied the log (its head is at {}); `homeroom serve` builds them",
            head?
        );
        if json {
            print_to_stdout("[]\n");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let instance = Instance::open(settings).await?;
    let status = instance.runtime.status().await;
    instance.close().await;
    let status = status?;
    if json {
        let mut text = serde_json::to_string_pretty(&status).unwrap_or_default();
        text.push('\n');
        print_to_stdout(&text);
        return Ok(ExitCode::SUCCESS);
    }
    // Written whole at the end: a reader that stops early (`| head`) is no error.
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>7} {:>10} {:>24} {:>8}  health",
        "projector", "version", "generation", "checkpoint", "lag"
    );
    for p in &status {
        let health = match &p.health {
            homeroom_projections::Health::Live => "live".to_owned(),
            homeroom_projections::Health::Stale { built_by } => {
                format!("stale (built by version {built_by}; rebuilding)")
            }
            homeroom_projections::Health::Retrying { attempts, error } => {
                format!("retrying ({attempts} attempts): {error}")
            }
            homeroom_projections::Health::Parked { position, error } => {
                format!("PARKED at {position}: {error}")
            }
        };
        let _ = writeln!(
            out,
            "{:<16} {:>7} {:>10} {:>24} {:>8}  {health}",
            p.name,
            p.version,
            p.generation,
            p.checkpoint.to_string(),
            p.lag
        );
        if let Some(rebuild) = &p.rebuild {
            let state = match &rebuild.error {
                Some(error) => format!("STOPPED: {error} (run the rebuild again to resume)"),
                None => "building, or interrupted (run the rebuild again to resume)".to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<16} rebuilding generation {} (version {}): checkpoint {}, lag {}; {state}",
                "", rebuild.generation, rebuild.version, rebuild.checkpoint, rebuild.lag
            );
        }
    }
    // On PostgreSQL one process of the deployment applies the log: say whether it is
    // this one (it never is for this command, which only reads).
    let lease = match status.first().map(|p| &p.lease) {
        Some(homeroom_projections::LeaseState::Held) => Some("lease: held by this process"),
        Some(homeroom_projections::LeaseState::Standby) => Some(
            "lease: standby here (the serve node holding the schema's lease applies the log; docs/operations.md says how to name it)",
        ),
        Some(homeroom_projections::LeaseState::NotNeeded) | None => None,
    };
    if let Some(lease) = lease {
        let _ = writeln!(out, "{lease}");
    }
    print_to_stdout(&out);
    Ok(ExitCode::SUCCESS)
}

/// `homeroom projections rebuild NAME|--all`.
///
/// # Errors
/// [`RunError`] when the instance cannot be opened or the rebuild fails (its half-built
/// generation is kept, and the next rebuild resumes it).
pub async fn projections_rebuild(
    name: Option<String>,
    args: &InstanceArgs,
) -> Result<ExitCode, RunError> {
    let instance = Instance::open(existing_instance(args).await?).await?;
    let target = match name {
        Some(name) => RebuildTarget::Projector(name),
        None => RebuildTarget::All,
    };
    let bar = ProgressBar::new(0);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} {bar:40} {pos}/{len} events ({per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let result = instance
        .runtime
        .rebuild(target, |progress| {
            bar.set_length(progress.total());
            bar.set_position(progress.done());
            bar.set_message(format!(
                "{} ({:?})",
                progress.projectors.join(", "),
                progress.phase
            ));
        })
        .await;
    bar.finish_and_clear();
    instance.close().await;
    let report = result?;
    for p in &report.projectors {
        println!(
            "{}: version {} now serves from generation {} (checkpoint {}{})",
            p.name,
            p.version,
            p.generation,
            p.checkpoint,
            if p.resumed {
                ", resumed an interrupted rebuild"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `homeroom audit verify`: reads the whole log and checks every stream's hash chain.
///
/// # Errors
/// [`RunError`] when the store cannot be read. A broken chain is reported and gives
/// exit code 3.
pub async fn audit_verify(
    district: Option<&str>,
    args: &InstanceArgs,
) -> Result<ExitCode, RunError> {
    if let Some(d) = district.filter(|&d| d != DistrictId::UNROUTED) {
        DistrictId::parse(d).map_err(RunError::District)?;
    }
    let settings = existing_instance(args).await?;
    if !Instance::read_models_exist(&settings).await? {
        // Read models never built here (a log handed to an auditor, a migrated one):
        // check the chains, and create nothing (the auditor's role may be read-only).
        eprintln!(
            "note: no read models here, so no audit trail to compare the log with; checking the hash chains only (`homeroom serve` or `homeroom projections rebuild audit` builds one)"
        );
        let log = Instance::open_log(&settings).await?;
        let result = homeroom_app::verification::verify(&*log.shared(), None, district).await;
        log.close().await;
        return report_verification(district, result?);
    }
    let instance = Instance::open(settings).await?;
    let store = instance.shared_store();
    let trail = instance.runtime.read_models();
    // The hash chains, and the log against the audit trail (which shows a stream's last
    // events taken away, or events rewritten with their hashes recomputed).
    let result = homeroom_app::verification::verify(&*store, Some(&trail), district).await;
    let result = match result {
        Err(homeroom_app::verification::VerifyError::Trail(error)) => {
            eprintln!(
                "note: the audit trail could not be read ({error}); checking the hash chains only"
            );
            homeroom_app::verification::verify(&*store, None, district).await
        }
        other => other,
    };
    // A trail that has not applied the whole log (read models never built here, or a
    // server that is behind) compares only what it holds: say so, not "every chain holds"
    // alone.
    let audit_reached = instance
        .runtime
        .status()
        .await
        .ok()
        .and_then(|status| status.into_iter().find(|p| p.name == "audit"))
        .map(|p| p.checkpoint);
    let head = store.head().await.ok();
    instance.close().await;
    let verified = result?;
    if let (Some(reached), Some(head)) = (audit_reached, head) {
        if reached < head {
            eprintln!(
                "note: the audit trail holds the log up to position {reached} of {head}; events after it were checked by their hash chains only (`homeroom serve` or `homeroom projections rebuild audit` builds the rest)"
            );
        }
    }
    report_verification(district, verified)
}

/// Prints what `audit verify` found, and the exit code that says it.
fn report_verification(
    district: Option<&str>,
    verified: homeroom_app::verification::Verification,
) -> Result<ExitCode, RunError> {
    // A district with no event is a mistyped id, not a district whose chains hold. (No
    // text sent to an unknown number is the usual state of `_unrouted`.)
    if let Some(district) = district.filter(|&d| verified.checked == 0 && d != DistrictId::UNROUTED)
    {
        eprintln!("error: the log holds no events of district {district:?}: nothing verified");
        return Ok(ExitCode::FAILURE);
    }
    // A closed pipe (`| head`) cuts the report short but not the verdict: the exit code
    // still says whether every chain holds.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "checked {} events", verified.checked);
    if verified.broken.is_empty() {
        let _ = writeln!(out, "every hash chain holds");
        return Ok(ExitCode::SUCCESS);
    }
    for (stream, version) in &verified.broken {
        if writeln!(out, "BROKEN: {stream} version {version}").is_err() {
            break;
        }
    }
    Ok(ExitCode::from(3))
}

/// `homeroom audit unrouted`: every text recorded under the reserved district
/// `_unrouted` (sent to a number no district owns), read from the log itself, as one
/// JSON object a line: where it is in the log, when, and what arrived.
///
/// # Errors
/// [`RunError`] when the store cannot be opened or read.
pub async fn audit_unrouted(args: &InstanceArgs) -> Result<ExitCode, RunError> {
    use homeroom_eventstore::Position;
    const PAGE: usize = 1_000;
    let instance = Instance::open(existing_instance(args).await?).await?;
    let store = instance.shared_store();
    let mut after = Position::START;
    let mut out = std::io::stdout().lock();
    let result = 'pages: loop {
        let page = match store.read_all(after, PAGE).await {
            Ok(page) => page,
            Err(error) => break Err(error),
        };
        for e in &page {
            if e.metadata.district == DistrictId::UNROUTED && e.event_type == "inbound_sms_received"
            {
                let line = serde_json::json!({
                    "position": e.position,
                    "recorded_at": e.recorded_at,
                    "stream": e.stream.as_str(),
                    "sms": e.data,
                });
                // A closed pipe (`| head`) ends the listing, not in an error.
                if writeln!(out, "{line}").is_err() {
                    break 'pages Ok(());
                }
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = last.position,
            _ => break Ok(()),
        }
    };
    instance.close().await;
    result?;
    Ok(ExitCode::SUCCESS)
}

/// `homeroom audit export --district D`: every event of the district, read from the log
/// itself, one JSON object a line exactly as recorded (`RecordedEvent`: data, metadata
/// with the command digest, recorded time, previous hash and hash), in log order.
///
/// # Errors
/// [`RunError`] when the district is not one or the store cannot be read.
pub async fn audit_export(district: &str, args: &InstanceArgs) -> Result<ExitCode, RunError> {
    use homeroom_eventstore::Position;
    const PAGE: usize = 1_000;
    if district != DistrictId::UNROUTED {
        DistrictId::parse(district).map_err(RunError::District)?;
    }
    // The log alone: an export reads nothing else, and creates nothing (no read models
    // on an auditor's copy or a log just moved).
    let log = Instance::open_log(&existing_instance(args).await?).await?;
    let store = log.shared();
    let mut after = Position::START;
    let mut exported = 0u64;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let result = 'pages: loop {
        let page = match store.read_all(after, PAGE).await {
            Ok(page) => page,
            Err(error) => break Err(error),
        };
        for e in page.iter().filter(|e| e.metadata.district == district) {
            exported += 1;
            let mut line = serde_json::to_value(e).unwrap_or_default();
            // Exactly as hashed (microseconds, six digits), so an auditor recomputing the
            // hash needs no reformatting.
            line["recorded_at"] = homeroom_eventstore::hash::hashed_time(e.recorded_at).into();
            // A closed pipe ends the export, not in an error.
            if writeln!(out, "{line}").is_err() {
                break 'pages Ok(());
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = last.position,
            _ => break Ok(()),
        }
    };
    let _ = out.flush();
    log.close().await;
    result?;
    if exported == 0 {
        eprintln!("error: the log holds no events of district {district:?}: nothing exported");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `homeroom audit check-export FILE`: the export on its own and against the log now
/// ([`homeroom_app::verification::ExportChecker`]); exits 3 when they disagree, naming
/// each event.
///
/// # Errors
/// [`RunError`] when the file cannot be read or holds a line that is not an exported
/// event, or the store cannot be read.
pub async fn audit_check_export(
    file: &std::path::Path,
    args: &InstanceArgs,
) -> Result<ExitCode, RunError> {
    use std::io::BufRead;
    let reader = std::fs::File::open(file)
        .map(std::io::BufReader::new)
        .map_err(|source| RunError::ExportFile {
            file: file.to_owned(),
            source,
        })?;
    // Against the log alone, creating nothing (an auditor's copy has no read models).
    let log = Instance::open_log(&existing_instance(args).await?).await?;
    let store = log.shared();
    let mut checker = homeroom_app::verification::ExportChecker::new(&*store);
    let mut outcome = Ok(());
    // Lines that are not exported events: the file was altered (or damaged) there.
    let mut unreadable = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = match line {
            Ok(line) => line,
            Err(source) => {
                outcome = Err(RunError::ExportFile {
                    file: file.to_owned(),
                    source,
                });
                break;
            }
        };
        let event = match serde_json::from_str(&line) {
            Ok(event) => event,
            Err(e) => {
                unreadable.push((n + 1, e.to_string()));
                continue;
            }
        };
        if let Err(error) = checker.check(&event).await {
            outcome = Err(error.into());
            break;
        }
    }
    log.close().await;
    outcome?;
    let found = checker.finish();
    if found.checked == 0 && unreadable.is_empty() {
        return Err(RunError::EmptyExport {
            file: file.to_owned(),
        });
    }
    // A closed pipe (`| head`) cuts the listing short, not the verdict's exit code.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "checked {} exported events", found.checked);
    for (line, reason) in &unreadable {
        let _ = writeln!(
            out,
            "ALTERED IN THE FILE: line {line} is not an exported event ({reason})"
        );
    }
    for (what, events) in [
        ("ALTERED IN THE FILE", &found.altered_in_file),
        ("CHANGED IN THE LOG", &found.changed_in_log),
        ("MISSING FROM THE LOG", &found.missing_from_log),
        ("MISSING FROM THE FILE", &found.missing_from_file),
    ] {
        for (stream, version) in events {
            let _ = writeln!(out, "{what}: {stream} version {version}");
        }
    }
    if found.holds() && unreadable.is_empty() {
        let _ = writeln!(out, "the log holds every exported event as exported");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(3))
    }
}

/// `homeroom migrate sqlite-to-postgres --to URL`: the instance's SQLite log into
/// PostgreSQL (schema `HOMEROOM_PG_SCHEMA`), verbatim and verified, with a progress bar.
///
/// # Errors
/// [`RunError`] when either store cannot be opened or the import is refused (a broken
/// chain, a target holding other events); nothing half-written stays unexplained: a
/// rerun resumes.
pub async fn migrate_sqlite_to_postgres(
    to: &str,
    args: &InstanceArgs,
) -> Result<ExitCode, RunError> {
    use homeroom_eventstore::EventReader;
    use homeroom_store_postgres::import::{import_log, ImportOptions};
    let settings = settings(args)?;
    let backends = settings.backends()?;
    let crate::config::StoreChoice::Sqlite(path) = backends.store else {
        return Err(RunError::Config(ConfigError::Invalid {
            setting: "HOMEROOM_STORE",
            value: "(not SQLite)".to_owned(),
            expected: "the SQLite store to move from (unset it, or sqlite://PATH)",
        }));
    };
    if !path.is_file() {
        return Err(RunError::ReadFile {
            path,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no event log here"),
        });
    }
    let schema = settings.pg_schema();
    let source = homeroom_store_sqlite::SqliteStore::open(&path).await?;
    let target = homeroom_store_postgres::PgStore::connect(to, &schema)
        .await
        .map_err(|e| RunError::backend("the PostgreSQL event store", e))?;
    let total = source.head().await?.sequence;
    let bar = ProgressBar::new(total);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} events ({per_sec}, {eta} left) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let result = import_log(&source, &target, ImportOptions::default(), |p| {
        bar.set_position(p.read);
        bar.set_message(format!(
            "{} already there, {} written in {} transactions",
            p.skipped, p.written, p.batches
        ));
    })
    .await;
    bar.finish_and_clear();
    source.close().await;
    target.close().await;
    let report = result.map_err(|e| RunError::backend("the import", e))?;
    println!(
        "imported {} events in {} streams into schema {schema} ({} already there, {} written); every hash chain verified; last position {}",
        report.events, report.streams, report.skipped, report.written, report.target_head
    );
    println!("next: HOMEROOM_STORE={} HOMEROOM_PG_SCHEMA={schema} homeroom serve (the read models are built from the log on the first start)", redact_url(to));
    Ok(ExitCode::SUCCESS)
}

/// A URL as it may be printed: without its password.
fn redact_url(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://…@{host}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_like_people_write_them() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1_800));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3_600));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(604_800));
        for bad in ["", "h", "1y", "-1h", "0s", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
