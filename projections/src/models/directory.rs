//! The directory read model: who people are (name, kind, language), which guardians
//! speak for which student, and who can be reached at which address. Queries join it for
//! names and for a student's record; delivery workers ask it whether a phone number is
//! shared (to label texts `For Dennis: …`).

use super::names;
use crate::db::{query, Engine, Tx};
use crate::error::ProjectionError;
use crate::projector::{render_for, Bridge, Generation, PerGeneration, Projector};
use crate::search;
use async_trait::async_trait;
use homeroom_domain::Event;
use homeroom_eventstore::RecordedEvent;

/// The projector's name.
pub const NAME: &str = "directory";

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS people{directory} (
        district TEXT NOT NULL,
        person_id {uuid} NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        name_folded TEXT,
        language TEXT NOT NULL,
        registered_at {ts} NOT NULL,
        PRIMARY KEY (district, person_id)
    ) {compact}",
    "CREATE TABLE IF NOT EXISTS guardian_links{directory} (
        district TEXT NOT NULL,
        student_id {uuid} NOT NULL,
        guardian_id {uuid} NOT NULL,
        linked_at {ts} NOT NULL,
        unlinked_at {ts},
        PRIMARY KEY (district, student_id, guardian_id, linked_at)
    ) {compact}",
    "CREATE TABLE IF NOT EXISTS contact_points{directory} (
        district TEXT NOT NULL,
        address TEXT NOT NULL,
        person_id {uuid} NOT NULL,
        PRIMARY KEY (district, address, person_id)
    ) {compact}",
];

struct Sql {
    register: String,
    language: String,
    link: String,
    contact: String,
    unlink: String,
    forget_contacts: String,
}

impl Sql {
    fn new(engine: Engine, g: Generation) -> Self {
        let r = |t: &str| render_for(engine, t, NAME, g);
        Self {
            register: r("INSERT INTO people{directory}
                    (district, person_id, kind, name, language, registered_at, name_folded)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (district, person_id) DO UPDATE SET
                    kind = excluded.kind, name = excluded.name,
                    name_folded = excluded.name_folded, language = excluded.language"),
            language: r("UPDATE people{directory} SET language = $3
                WHERE district = $1 AND person_id = $2"),
            // One row per time the link held: a guardian linked again after an unlink
            // starts a new one, so the record keeps the gap between them.
            link: r("INSERT INTO guardian_links{directory}
                    (district, student_id, guardian_id, linked_at)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (district, student_id, guardian_id, linked_at) DO NOTHING"),
            // The link stays, ended: the student's record keeps what was written while
            // it held.
            unlink: r("UPDATE guardian_links{directory} SET unlinked_at = $4
                WHERE district = $1 AND student_id = $2 AND guardian_id = $3
                  AND unlinked_at IS NULL"),
            contact: r(
                "INSERT INTO contact_points{directory} (district, address, person_id)
                VALUES ($1, $2, $3)
                ON CONFLICT (district, address, person_id) DO NOTHING",
            ),
            forget_contacts: r("DELETE FROM contact_points{directory}
                WHERE district = $1 AND person_id = $2"),
        }
    }
}

/// Builds `people`, `guardian_links` and `contact_points` from `PersonRegistered`,
/// `ContactPreferencesSet`, `ContactPointsChanged`, `GuardianLinked` and
/// `GuardianUnlinked`.
#[derive(Default)]
pub struct Directory {
    sql: PerGeneration<Sql>,
}

#[async_trait]
impl Projector for Directory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        // 3: names keep their search copy (`search::folded`).
        // 4: a guardian's link keeps when it ended (`unlinked_at`).
        // 5: one `guardian_links` row per time the link held (a relink starts another).
        5
    }

    fn tables(&self) -> &'static [&'static str] {
        &["people", "guardian_links", "contact_points"]
    }

    fn schema(&self, engine: Engine, generation: Generation) -> Vec<String> {
        SCHEMA
            .iter()
            .map(|t| render_for(engine, t, NAME, generation))
            .collect()
    }

    /// The columns added since: every link the old generation holds is current.
    fn bridge_from(&self, engine: Engine, generation: Generation, _built_by: u32) -> Vec<Bridge> {
        let r = |t: &str| render_for(engine, t, NAME, generation);
        vec![
            Bridge::AddColumn {
                table: r("people{directory}"),
                column: "name_folded",
                definition: "TEXT".to_owned(),
            },
            Bridge::AddColumn {
                table: r("guardian_links{directory}"),
                column: "unlinked_at",
                definition: r("{ts}"),
            },
        ]
    }

    async fn apply(
        &self,
        tx: &mut Tx<'_>,
        generation: Generation,
        recorded: &RecordedEvent,
        event: &Event,
    ) -> Result<(), ProjectionError> {
        let sql = self.sql.get(tx.engine(), generation, Sql::new);
        let district = recorded.metadata.district.as_str();
        match event {
            Event::PersonRegistered(e) => {
                query(&sql.register)
                    .bind(district)
                    .bind(e.person_id.as_uuid())
                    .bind(names::person_kind(e.kind))
                    .bind(&e.name)
                    .bind(&e.language)
                    .bind(e.at)
                    .bind(search::folded(&e.name))
                    .execute(tx)
                    .await?;
                record_contacts(tx, &sql.contact, district, e.person_id, &e.contact_points).await?;
            }
            Event::ContactPreferencesSet(e) => {
                query(&sql.language)
                    .bind(district)
                    .bind(e.person_id.as_uuid())
                    .bind(&e.language)
                    .execute(tx)
                    .await?;
            }
            Event::ContactPointsChanged(e) => {
                query(&sql.forget_contacts)
                    .bind(district)
                    .bind(e.person_id.as_uuid())
                    .execute(tx)
                    .await?;
                record_contacts(tx, &sql.contact, district, e.person_id, &e.contact_points).await?;
            }
            Event::GuardianLinked(e) => {
                query(&sql.link)
                    .bind(district)
                    .bind(e.student_id.as_uuid())
                    .bind(e.guardian_id.as_uuid())
                    .bind(e.at)
                    .execute(tx)
                    .await?;
            }
            Event::GuardianUnlinked(e) => {
                query(&sql.unlink)
                    .bind(district)
                    .bind(e.student_id.as_uuid())
                    .bind(e.guardian_id.as_uuid())
                    .bind(e.at)
                    .execute(tx)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The rows of `contact_points` saying `person` can be reached at each of `points`.
async fn record_contacts(
    tx: &mut Tx<'_>,
    insert: &str,
    district: &str,
    person: homeroom_domain::PersonId,
    points: &[homeroom_domain::ContactPoint],
) -> Result<(), ProjectionError> {
    for cp in points {
        query(insert)
            .bind(district)
            .bind(&cp.address)
            .bind(person.as_uuid())
            .execute(tx)
            .await?;
    }
    Ok(())
}
