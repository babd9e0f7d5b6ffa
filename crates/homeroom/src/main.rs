//! The `homeroom` binary: reads the settings, opens the instance and runs a subcommand.
//!
//! - `serve`: the HTTP API (`homeroom_api`) on the embedded default (SQLite in the data
//!   directory), until SIGTERM or Ctrl-C; then it stops accepting, answers the requests
//!   in flight, closes the store and exits 0.
//! - `worker`: delivery workers on NATS (the embedded default sends from `serve`).
//! - `token`: prints a bearer token signed with the instance's key.
//! - `import roles FILE.csv`: assigns roles from a CSV file through the command service,
//!   with a progress bar.
//! - `projections status|rebuild`: the read models' lag and health; blue/green rebuilds
//!   with a progress bar.
//! - `audit verify`: checks every hash chain of the log.
//! - `migrate sqlite-to-postgres`: moves the embedded log into PostgreSQL, hashes intact.

/// mimalloc rather than the system allocator: the command path allocates and frees many
/// small buffers from several threads, where glibc's malloc took a fifth of the command
/// benchmark's time. With the workspace's `override` feature it also serves SQLite's own
/// `malloc` (every column of every row read is copied), which nearly doubled how fast
/// the log is read and decoded (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config;
mod instance;
mod run;

use clap::{Parser, Subcommand};
use config::InstanceArgs;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "homeroom",
    version,
    about = "Homeroom: an event-sourced messaging core for schools",
    long_about = "Homeroom: an event-sourced messaging core for schools.\n\nSettings come from, in increasing precedence: defaults, a TOML file (--config or HOMEROOM_CONFIG), HOMEROOM_* environment variables, and flags."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the HTTP API (default 127.0.0.1:8080, data in ./homeroom-data).
    Serve {
        /// Where to listen, e.g. 127.0.0.1:8080 or 0.0.0.0:80 (port 0 picks a free port) [env: HOMEROOM_LISTEN].
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// Send deliveries: take queued deliveries from NATS, hand them to SMS, email or the
    /// app, and record the outcomes (run any number, on any machine; needs HOMEROOM_BUS=nats://…).
    Worker {
        /// Deliveries handled at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// Print a bearer token signed with the instance's key (created if there is none).
    Token {
        /// The district (tenant) the token is for.
        #[arg(long)]
        district: String,
        /// The acting person's id (a UUID), or a service name with --scope system.
        #[arg(long)]
        subject: String,
        /// `system` for SIS sync and delivery workers.
        #[arg(long, value_enum)]
        scope: Option<run::Scope>,
        /// How long the token is valid: e.g. 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = run::parse_ttl)]
        ttl: std::time::Duration,
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// Import data into the instance directly (no server needed).
    Import {
        #[command(subcommand)]
        what: ImportCmd,
    },
    /// Watch and rebuild the read models (safe while `serve` runs on the same data).
    Projections {
        #[command(subcommand)]
        what: ProjectionsCmd,
    },
    /// Move the instance's event log to another store.
    Migrate {
        #[command(subcommand)]
        what: MigrateCmd,
    },
    /// Check the tamper-evident event log.
    Audit {
        #[command(subcommand)]
        what: AuditCmd,
    },
}

#[derive(Subcommand)]
enum ProjectionsCmd {
    /// Each projector's version, serving generation, checkpoint, lag and health.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// Rebuild read models blue/green: new tables are built from the log while the old
    /// ones keep answering, then queries switch over atomically.
    Rebuild {
        /// The projector to rebuild (see `projections status`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Rebuild every projector (the log is read once).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        instance: InstanceArgs,
    },
}

#[derive(Subcommand)]
enum MigrateCmd {
    /// Copy the embedded SQLite log into PostgreSQL, event for event: same ids, versions,
    /// times and hashes (every chain verified on the way). Resumable: run it again after
    /// an interruption. Then start serve with HOMEROOM_STORE set to the same URL.
    SqliteToPostgres {
        /// The PostgreSQL database to move to (postgres://…).
        #[arg(long, value_name = "URL")]
        to: String,
        #[command(flatten)]
        instance: InstanceArgs,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Verify every hash chain of the log; exits 3 when one is broken.
    Verify {
        /// Only this district's streams (default: every district; `_unrouted` for the
        /// texts to numbers no district owns).
        #[arg(long)]
        district: Option<String>,
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// Print every text that reached a number no district owns, one JSON object a line
    /// (they belong to no district, so only the instance's operator can read them).
    Unrouted {
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// Write a district's whole log as JSON lines, every event with every field its hash
    /// covers, to keep apart from the instance (write-once storage) for `check-export`.
    Export {
        /// The district.
        #[arg(long)]
        district: String,
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// Check an export (`audit export`) on its own (every hash recomputed, every chain
    /// linked) and against the log as it is now; exits 3 when they disagree.
    CheckExport {
        /// The export file (JSON lines).
        file: std::path::PathBuf,
        #[command(flatten)]
        instance: InstanceArgs,
    },
}

#[derive(Subcommand)]
enum ImportCmd {
    /// Assign roles from a CSV file with the header person_id,role_id,school_id.
    ///
    /// Each row is one AssignRole command: a bad row is reported and never stops the
    /// others. Exits 0 when every row was accepted, 2 when some were rejected.
    Roles {
        /// The CSV file.
        file: PathBuf,
        /// The district to import into.
        #[arg(long)]
        district: String,
        /// Who acts: a person's id (a UUID) or a service name [default: system service homeroom-import].
        #[arg(long = "as", value_name = "SUBJECT")]
        actor: Option<String>,
        /// A UUID making the import idempotent: the same file with the same key records nothing twice.
        #[arg(long, value_name = "UUID")]
        idempotency_key: Option<uuid::Uuid>,
        #[command(flatten)]
        instance: InstanceArgs,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Serve { listen, instance } => run::serve(listen, &instance).await,
            Cmd::Worker {
                concurrency,
                instance,
            } => run::worker(concurrency, &instance).await,
            Cmd::Token {
                district,
                subject,
                scope,
                ttl,
                instance,
            } => run::token(&district, &subject, scope, ttl, &instance),
            Cmd::Import {
                what:
                    ImportCmd::Roles {
                        file,
                        district,
                        actor,
                        idempotency_key,
                        instance,
                    },
            } => {
                run::import_roles(
                    &file,
                    &district,
                    actor.as_deref(),
                    idempotency_key,
                    &instance,
                )
                .await
            }
            Cmd::Projections {
                what: ProjectionsCmd::Status { json, instance },
            } => run::projections_status(json, &instance).await,
            Cmd::Projections {
                what:
                    ProjectionsCmd::Rebuild {
                        name,
                        all: _,
                        instance,
                    },
            } => run::projections_rebuild(name, &instance).await,
            Cmd::Audit {
                what: AuditCmd::Verify { district, instance },
            } => run::audit_verify(district.as_deref(), &instance).await,
            Cmd::Audit {
                what: AuditCmd::Unrouted { instance },
            } => run::audit_unrouted(&instance).await,
            Cmd::Audit {
                what: AuditCmd::Export { district, instance },
            } => run::audit_export(&district, &instance).await,
            Cmd::Audit {
                what: AuditCmd::CheckExport { file, instance },
            } => run::audit_check_export(&file, &instance).await,
            Cmd::Migrate {
                what: MigrateCmd::SqliteToPostgres { to, instance },
            } => run::migrate_sqlite_to_postgres(&to, &instance).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
