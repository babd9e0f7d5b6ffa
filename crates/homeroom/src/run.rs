//! What each subcommand does, on the settings `config` resolved.

use crate::config::{ConfigError, InstanceArgs, Settings, StoreChoice};
use homeroom_api::import::{self, ImportError, RowStatus};
use homeroom_api::{auth::KeyFileError, auth::SignError, ApiState, Caller, Claims, TokenKeys};
use homeroom_app::CommandService;
use homeroom_domain::{Actor, DistrictId, IdError, PersonId};
use homeroom_eventstore::{EventReader, EventStore, StoreError};
use homeroom_store_sqlite::SqliteStore;
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

struct Instance {
    settings: Settings,
    store: SqliteStore,
    store_path: PathBuf,
}

fn settings(args: &InstanceArgs) -> Result<(Settings, StoreChoice), RunError> {
    let settings = Settings::load(args)?;
    let store = settings.check_supported()?;
    Ok((settings, store))
}

async fn open(settings: Settings, store: StoreChoice) -> Result<Instance, RunError> {
    let StoreChoice::Sqlite(store_path) = store;
    for dir in [Some(settings.data_dir.as_path()), store_path.parent()]
        .into_iter()
        .flatten()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|source| RunError::DataDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let store = SqliteStore::open(&store_path).await?;
    Ok(Instance {
        settings,
        store,
        store_path,
    })
}

/// `homeroom serve`.
///
/// # Errors
/// [`RunError`] when the instance cannot be opened or the address bound.
pub async fn serve(listen: Option<String>, args: &InstanceArgs) -> Result<ExitCode, RunError> {
    let (mut settings, store) = settings(args)?;
    if let Some(listen) = listen {
        settings.listen = listen;
    }
    let key_file = settings.jwt_key_file();
    let Instance {
        settings,
        store,
        store_path,
    } = open(settings, store).await?;
    let keys = TokenKeys::load_or_create(&key_file)?;
    let head = store.head().await?;
    let listener = TcpListener::bind(&settings.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: settings.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(RunError::Serve)?;

    let shared: Arc<dyn EventStore> = Arc::new(store.clone());
    let state = ApiState::new(shared, keys);
    let data_dir = absolute(&settings.data_dir);
    println!("homeroom {}", env!("CARGO_PKG_VERSION"));
    println!("data directory: {}", data_dir.display());
    println!(
        "event store: SQLite {} (log head at position {head})",
        absolute(&store_path).display()
    );
    println!("token key: {}", absolute(&key_file).display());
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, data_dir = %data_dir.display(), "serving the HTTP API; stop with Ctrl-C or SIGTERM");

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
    store.close().await;
    served.map_err(RunError::Serve)?;
    tracing::info!("stopped; the event store is closed");
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

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
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
    let (settings, store) = settings(args)?;
    let instance = open(settings, store).await?;
    let shared: Arc<dyn EventStore> = Arc::new(instance.store.clone());
    let service = CommandService::new(shared, 100_000);

    let bar = ProgressBar::new(rows.len() as u64);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} rows ({per_sec}, {eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let caller = Caller { district, actor };
    let report = import::import_rows(&service, &caller, key, rows, None, |_| bar.inc(1)).await;
    bar.finish_and_clear();
    instance.store.close().await;

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
