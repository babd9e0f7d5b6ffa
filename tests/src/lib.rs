//! Shared helpers for the end-to-end scenarios: a small school district built through
//! the real command service on any event store, so every scenario runs against every
//! backend unchanged. [`http`] holds the same seeds' scenarios over HTTP, for an
//! in-process server and for the real binary.

pub mod http;

use homeroom_api::{ApiState, TokenKeys};
use homeroom_app::QueryService;
use homeroom_projections::{models, ProjectionRuntime, ReadDb, RuntimeConfig};

use homeroom_app::{parse_command, CommandContext, CommandError, CommandOutcome, CommandService};
use homeroom_domain::{Actor, DistrictId, PersonId};
use homeroom_eventstore::EventStore;
use serde_json::{json, Value};
use std::sync::Arc;
use uuid::Uuid;

/// The API's state over `store` with the read models in a fresh temporary directory and
/// the projectors following the log on the current runtime, as `homeroom serve` wires
/// them.
pub struct InProcess {
    /// What the router serves.
    pub state: ApiState,
    /// The projectors the reads wait on.
    pub runtime: ProjectionRuntime,
    _read_models: tempfile::TempDir,
}

impl InProcess {
    /// Opens the read models and starts the projectors.
    ///
    /// # Panics
    /// When the read models cannot be created: the test cannot run.
    pub async fn start(store: Arc<dyn EventStore>, keys: TokenKeys) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = ReadDb::open(&dir.path().join("read.sqlite"))
            .await
            .expect("the read models open");
        let runtime =
            ProjectionRuntime::open(store.clone(), db, models::all(), RuntimeConfig::default())
                .await
                .expect("the projection runtime opens");
        tokio::spawn({
            let runtime = runtime.clone();
            async move { runtime.run(std::future::pending()).await }
        });
        let commands = Arc::new(CommandService::new(store, 10_000));
        let queries = Arc::new(QueryService::new(commands.clone(), runtime.clone()));
        Self {
            state: ApiState::new(commands, queries, keys),
            runtime,
            _read_models: dir,
        }
    }
}

/// A district with one school and the people the seeds talk about.
pub struct District {
    /// The command service every scenario drives.
    pub service: Arc<CommandService>,
    /// The store under it.
    pub store: Arc<dyn EventStore>,
    /// The tenant.
    pub district: DistrictId,
    /// The school.
    pub school: Uuid,
    /// The school's SMS number ([`school_number_of`] the district's name).
    pub school_number: String,
    /// A School Admin (personal messages and school inbox on by default).
    pub principal: Uuid,
    /// A Technical School Admin (personal messages off by default).
    pub technician: Uuid,
    /// A teacher of `teen`.
    pub teacher: Uuid,
    /// A student who is 14 today.
    pub teen: Uuid,
    /// A student who is 12 today.
    pub child: Uuid,
    /// `teen`'s guardian.
    pub parent: Uuid,
}

/// A school SMS number of its own for the district named `name` (`+1555` and seven
/// digits from the name): a number belongs to one district, so districts sharing a store
/// must not share one.
pub fn school_number_of(name: &str) -> String {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("+1555{:07}", hash % 10_000_000)
}

impl District {
    /// Builds the district on `store` through commands, as an SIS sync would.
    ///
    /// # Panics
    /// When a set-up command is refused: the scenario cannot run.
    pub async fn build(store: Arc<dyn EventStore>, name: &str) -> Self {
        let service = Arc::new(CommandService::new(store.clone(), 10_000));
        let district = DistrictId::parse(name).expect("a valid district id");
        let d = Self {
            service,
            store,
            school_number: school_number_of(name),
            district,
            school: Uuid::now_v7(),
            principal: Uuid::now_v7(),
            technician: Uuid::now_v7(),
            teacher: Uuid::now_v7(),
            teen: Uuid::now_v7(),
            child: Uuid::now_v7(),
            parent: Uuid::now_v7(),
        };
        let today = chrono::Utc::now().date_naive();
        let born = |years: i32| today.with_year_offset(-years).to_string();
        d.system("RegisterSchool", json!({"school_id": d.school, "name": "Lincoln Middle School", "sms_number": d.school_number})).await;
        for (id, name) in [
            (d.principal, "Principal Skinner"),
            (d.technician, "Tech Admin"),
            (d.teacher, "Ms. Rivera"),
        ] {
            d.system(
                "RegisterPerson",
                json!({"person_id": id, "kind": "staff", "name": name, "school_ids": [d.school]}),
            )
            .await;
        }
        d.system("RegisterPerson", json!({"person_id": d.teen, "kind": "student", "name": "Dennis", "school_ids": [d.school], "birth_date": born(14), "contact_points": [{"channel": "sms", "address": "+15550002001"}]})).await;
        d.system("RegisterPerson", json!({"person_id": d.child, "kind": "student", "name": "Lisa", "school_ids": [d.school], "birth_date": born(12), "contact_points": [{"channel": "sms", "address": "+15550002002"}]})).await;
        d.system("RegisterPerson", json!({"person_id": d.parent, "kind": "guardian", "name": "Marge", "school_ids": [d.school], "contact_points": [{"channel": "sms", "address": "+15550002003"}]})).await;
        d.system(
            "LinkGuardian",
            json!({"guardian_id": d.parent, "student_id": d.teen}),
        )
        .await;
        d.system(
            "SetStudentTeachers",
            json!({"student_id": d.teen, "teacher_ids": [d.teacher]}),
        )
        .await;
        d.system(
            "AssignRole",
            json!({"person_id": d.principal, "role_id": "school_admin", "school_id": d.school}),
        )
        .await;
        d.system("AssignRole", json!({"person_id": d.technician, "role_id": "technical_school_admin", "school_id": d.school})).await;
        d.system(
            "AssignRole",
            json!({"person_id": d.teacher, "role_id": "teacher", "school_id": d.school}),
        )
        .await;
        d
    }

    /// Runs a command as the SIS sync, panicking on refusal.
    ///
    /// # Panics
    /// When the command is refused.
    pub async fn system(&self, name: &str, body: Value) -> CommandOutcome {
        self.run(Actor::System("sis-sync".into()), name, body)
            .await
            .unwrap_or_else(|e| panic!("{name} refused: {e}"))
    }

    /// Runs a command as `person`.
    ///
    /// # Errors
    /// Whatever the command service answers.
    pub async fn by(
        &self,
        person: Uuid,
        name: &str,
        body: Value,
    ) -> Result<CommandOutcome, CommandError> {
        self.run(Actor::Person(PersonId::new(person)), name, body)
            .await
    }

    /// Runs a command as `actor` with a fresh command id.
    ///
    /// # Errors
    /// Whatever the command service answers.
    pub async fn run(
        &self,
        actor: Actor,
        name: &str,
        body: Value,
    ) -> Result<CommandOutcome, CommandError> {
        let ctx = CommandContext::new(self.district.clone(), actor);
        self.run_in(&ctx, name, body).await
    }

    /// Runs a command in a given context (to choose the command id).
    ///
    /// # Errors
    /// Whatever the command service answers.
    ///
    /// # Panics
    /// When the body does not parse: scenarios only send well-formed commands.
    pub async fn run_in(
        &self,
        ctx: &CommandContext,
        name: &str,
        body: Value,
    ) -> Result<CommandOutcome, CommandError> {
        let command = parse_command(name, body).expect("scenario commands parse");
        self.service.execute(ctx, &command).await
    }
}

/// Extension for building birth dates "N years ago today".
trait YearOffset {
    fn with_year_offset(self, years: i32) -> Self;
}

impl YearOffset for chrono::NaiveDate {
    fn with_year_offset(self, years: i32) -> Self {
        use chrono::Datelike;
        let year = self.year() + years;
        self.with_year(year)
            .or_else(|| chrono::NaiveDate::from_ymd_opt(year, self.month(), 28))
            .expect("a real date")
    }
}
