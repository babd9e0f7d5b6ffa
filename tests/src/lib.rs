//! Shared helpers for the end-to-end scenarios: a small school district built through
//! the real command service on any event store, so every scenario runs against every
//! backend unchanged. [`http`] holds the same seeds' scenarios over HTTP, for an
//! in-process server and for the real binary.

pub mod http;

use homeroom_app::{parse_command, CommandContext, CommandError, CommandOutcome, CommandService};
use homeroom_domain::{Actor, DistrictId, PersonId};
use homeroom_eventstore::EventStore;
use serde_json::{json, Value};
use std::sync::Arc;
use uuid::Uuid;

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
        d.system("RegisterSchool", json!({"school_id": d.school, "name": "Lincoln Middle School", "sms_number": "+15550001000"})).await;
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
