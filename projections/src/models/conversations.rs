//! The conversations read model: every conversation with its participants and
//! messages in order, and each person's view of it (mute, archive, read position).
//!
//! Inboxes, threads, oversight, student records and exports are all queries over these
//! tables (plus names from the directory and statuses from the deliveries):
//!
//! - `conversations`: one row per conversation, with its last message denormalised so
//!   an inbox page is one indexed scan;
//! - `conversation_people`: one row per (conversation, person) for participants
//!   (`participant`, `ordinal`) and for anyone else who muted, archived, read or wrote
//!   in it (a school-inbox holder), with `read_seq`, the order number of the last
//!   message read, `own_after_read`, how many of the messages after it the person
//!   wrote, and `archived_seq`, the message count when they archived it (a later
//!   message brings it back). Order numbers have no gaps, so a person's unread count is
//!   `message_count - read_seq - own_after_read`, without counting messages;
//! - `messages`: every message with its order number `seq` in the conversation and its
//!   log position (the paging key of a student's record);
//! - `refused_replies`: the SMS replies a conversation kept without posting them
//!   (`inbound_reply_refused`), so staff and records see them beside the thread.

use super::names;
use crate::db::{execute_rows, position_columns, query, Builder, Engine, Tx, Value};
use crate::error::ProjectionError;
use crate::projector::{
    message_runs, render_for, Bridge, Envelope, Generation, PerGeneration, Projector, Run,
};
use crate::search;
use async_trait::async_trait;
use homeroom_domain::events::MessagePosted;
use homeroom_domain::Event;
use homeroom_eventstore::RecordedEvent;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// Rows per multi-row statement of the bulk path (at most 14 parameters a row).
const CHUNK: usize = 256;
/// Ids per `IN (…)` lookup of the bulk path.
const LOOKUP: usize = 256;

/// The projector's name.
pub const NAME: &str = "conversations";

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS conversations{conversations} (
        district TEXT NOT NULL,
        conversation_id {uuid} NOT NULL,
        school_id {uuid} NOT NULL,
        kind TEXT NOT NULL,
        title TEXT,
        title_folded TEXT,
        started_by {uuid} NOT NULL,
        started_at {ts} NOT NULL,
        stopped BOOLEAN NOT NULL,
        message_count BIGINT NOT NULL,
        last_message_id {uuid},
        last_author_id {uuid},
        last_body TEXT,
        last_sent_at {ts},
        last_commit BIGINT NOT NULL,
        last_sequence BIGINT NOT NULL,
        PRIMARY KEY (district, conversation_id)
    )",
    "CREATE INDEX IF NOT EXISTS conversations{conversations}_recent
        ON conversations{conversations} (district, last_commit, last_sequence)",
    "CREATE INDEX IF NOT EXISTS conversations{conversations}_school
        ON conversations{conversations} (district, school_id, kind, last_commit, last_sequence)",
    "CREATE TABLE IF NOT EXISTS conversation_people{conversations} (
        district TEXT NOT NULL,
        conversation_id {uuid} NOT NULL,
        person_id {uuid} NOT NULL,
        participant BOOLEAN NOT NULL,
        ordinal BIGINT,
        muted BOOLEAN NOT NULL,
        archived BOOLEAN NOT NULL,
        archived_seq BIGINT NOT NULL DEFAULT 0,
        read_seq BIGINT NOT NULL,
        own_after_read BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (district, conversation_id, person_id)
    ) {compact}",
    "CREATE INDEX IF NOT EXISTS conversation_people{conversations}_person
        ON conversation_people{conversations} (district, person_id, participant)",
    "CREATE TABLE IF NOT EXISTS messages{conversations} (
        district TEXT NOT NULL,
        message_id {uuid} NOT NULL,
        conversation_id {uuid} NOT NULL,
        seq BIGINT NOT NULL,
        author_id {uuid} NOT NULL,
        sent_as TEXT NOT NULL,
        body TEXT NOT NULL,
        body_folded TEXT,
        subject TEXT,
        subject_folded TEXT,
        sent_at {ts} NOT NULL,
        pos_commit BIGINT NOT NULL,
        pos_sequence BIGINT NOT NULL,
        shared_phone_with TEXT,
        PRIMARY KEY (district, message_id, conversation_id)
    )",
    "CREATE UNIQUE INDEX IF NOT EXISTS messages{conversations}_order
        ON messages{conversations} (district, conversation_id, seq)",
    // Texts a family sent that the conversation kept but did not post (it was stopped,
    // or the text held blocked content): never a message, never lost, shown to staff.
    "CREATE TABLE IF NOT EXISTS refused_replies{conversations} (
        district TEXT NOT NULL,
        conversation_id {uuid} NOT NULL,
        message_sid TEXT NOT NULL,
        author_id {uuid} NOT NULL,
        body TEXT NOT NULL,
        reason TEXT NOT NULL,
        received_at {ts} NOT NULL,
        pos_commit BIGINT NOT NULL,
        pos_sequence BIGINT NOT NULL,
        shared_phone_with TEXT,
        PRIMARY KEY (district, conversation_id, message_sid)
    )",
];

struct Sql {
    start: String,
    refused: String,
    participant: String,
    stop: String,
    resume: String,
    rename: String,
    mute: String,
    archive: String,
    read: String,
    recount_own: String,
}

impl Sql {
    fn new(engine: Engine, g: Generation) -> Self {
        let r = |t: &str| render_for(engine, t, NAME, g);
        Self {
            refused: r("INSERT INTO refused_replies{conversations}
                    (district, conversation_id, message_sid, author_id, body, reason,
                     received_at, pos_commit, pos_sequence, shared_phone_with)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                ON CONFLICT (district, conversation_id, message_sid) DO NOTHING"),
            start: r("INSERT INTO conversations{conversations}
                    (district, conversation_id, school_id, kind, title, started_by, started_at,
                     stopped, message_count, last_commit, last_sequence, title_folded)
                VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE, 0, $8, $9, $10)
                ON CONFLICT (district, conversation_id) DO NOTHING"),
            participant: r("INSERT INTO conversation_people{conversations} AS p
                    (district, conversation_id, person_id, participant, ordinal, muted, archived,
                     read_seq)
                VALUES ($1, $2, $3, TRUE, $4, FALSE, FALSE, 0)
                ON CONFLICT (district, conversation_id, person_id) DO UPDATE SET
                    participant = TRUE, ordinal = excluded.ordinal"),
            stop: r("UPDATE conversations{conversations} SET stopped = TRUE
                WHERE district = $1 AND conversation_id = $2"),
            resume: r("UPDATE conversations{conversations} SET stopped = FALSE
                WHERE district = $1 AND conversation_id = $2"),
            rename: r(
                "UPDATE conversations{conversations} SET title = $3, title_folded = $4
                WHERE district = $1 AND conversation_id = $2",
            ),
            mute: r("INSERT INTO conversation_people{conversations} AS p
                    (district, conversation_id, person_id, participant, muted, archived, read_seq)
                VALUES ($1, $2, $3, FALSE, $4, FALSE, 0)
                ON CONFLICT (district, conversation_id, person_id) DO UPDATE SET
                    muted = excluded.muted"),
            // The message count goes with it: a later message brings the conversation
            // back (`queries::inbox::ARCHIVED`).
            archive: r("INSERT INTO conversation_people{conversations} AS p
                    (district, conversation_id, person_id, participant, muted, archived, read_seq,
                     archived_seq)
                SELECT $1, $2, $3, FALSE, FALSE, $4, 0, c.message_count
                FROM conversations{conversations} c
                WHERE c.district = $1 AND c.conversation_id = $2
                ON CONFLICT (district, conversation_id, person_id) DO UPDATE SET
                    archived = excluded.archived, archived_seq = excluded.archived_seq"),
            // Read positions only move forward.
            read: r("INSERT INTO conversation_people{conversations} AS p
                    (district, conversation_id, person_id, participant, muted, archived, read_seq)
                SELECT $1, $2, $3, FALSE, FALSE, FALSE, m.seq
                FROM messages{conversations} m
                WHERE m.district = $1 AND m.message_id = $4 AND m.conversation_id = $2
                ON CONFLICT (district, conversation_id, person_id) DO UPDATE SET
                    read_seq = CASE WHEN excluded.read_seq > p.read_seq
                                    THEN excluded.read_seq ELSE p.read_seq END"),
            // After the read position moved: the reader's own messages past it.
            recount_own: r(
                "UPDATE conversation_people{conversations} SET own_after_read =
                    (SELECT COUNT(*) FROM messages{conversations} m
                     WHERE m.district = $1 AND m.conversation_id = $2 AND m.author_id = $3
                       AND m.seq > conversation_people{conversations}.read_seq)
                WHERE district = $1 AND conversation_id = $2 AND person_id = $3",
            ),
        }
    }
}

/// Parameters per row of [`own_posted`].
const OWN_COLUMNS: usize = 8;

/// The values of one row of [`own_posted`]: `count` more messages by `author`.
fn own_row<'q>(district: &'q str, conversation: Uuid, author: Uuid, count: i64) -> Vec<Value<'q>> {
    vec![
        district.into(),
        conversation.into(),
        author.into(),
        count.into(),
        false.into(),
        false.into(),
        false.into(),
        0i64.into(),
    ]
}

/// The statement adding `own_after_read` for `rows` (district, conversation, author,
/// messages written) at once, creating the author's row when they are no participant
/// (a school-inbox holder writing from the school).
fn own_posted(engine: Engine, rows: usize) -> String {
    format!(
        "INSERT {{or_fail}} INTO conversation_people{{conversations}} AS p
            (district, conversation_id, person_id, own_after_read, participant, muted,
             archived, read_seq)
        VALUES {}
        ON CONFLICT (district, conversation_id, person_id) DO UPDATE SET
            own_after_read = p.own_after_read + excluded.own_after_read",
        engine.value_rows(rows, OWN_COLUMNS)
    )
}

/// `MessagePosted::shared_phone_with` as the `messages.shared_phone_with` column: the
/// ids separated by spaces, `NULL` for none (nearly every message).
fn shared_phone_column(people: &[homeroom_domain::PersonId]) -> Option<String> {
    (!people.is_empty()).then(|| {
        people
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// Builds `conversations`, `conversation_people`, `messages` and `refused_replies` from
/// the conversation streams' events.
#[derive(Default)]
pub struct Conversations {
    sql: PerGeneration<Sql>,
}

impl Conversations {
    /// A run of consecutive `MessagePosted` events, in a few statements: the message
    /// counts of their conversations and the ids already stored are read first, then
    /// every message is inserted with its order number and each conversation's last
    /// message is set once. A message whose id is already stored changes nothing; one
    /// for a conversation that never started is an inconsistency.
    async fn posted_run(
        &self,
        tx: &mut Tx<'_>,
        generation: Generation,
        run: &[(&RecordedEvent, &MessagePosted)],
    ) -> Result<(), ProjectionError> {
        let engine = tx.engine();
        let mut by_district: HashMap<&str, Vec<usize>> = HashMap::new();
        for (index, (recorded, _)) in run.iter().enumerate() {
            by_district
                .entry(recorded.metadata.district.as_str())
                .or_default()
                .push(index);
        }
        let mut messages = Vec::with_capacity(run.len());
        let mut last: HashMap<(&str, Uuid), Vec<Value<'_>>> = HashMap::new();
        let mut own: HashMap<(&str, Uuid, Uuid), i64> = HashMap::new();
        for (district, indexes) in &by_district {
            let conversations: HashSet<Uuid> = indexes
                .iter()
                .map(|&i| run[i].1.conversation_id.as_uuid())
                .collect();
            let ids: Vec<Uuid> = indexes
                .iter()
                .map(|&i| run[i].1.message_id.as_uuid())
                .collect();
            let mut counts = lookup(
                tx,
                generation,
                "SELECT conversation_id, message_count FROM conversations{conversations}
                 WHERE district = ",
                "conversation_id",
                district,
                conversations.into_iter().collect(),
            )
            .await?;
            let mut known = known_messages(tx, generation, district, ids).await?;
            for &i in indexes {
                let (recorded, e) = run[i];
                let conversation = e.conversation_id.as_uuid();
                if !known.insert((e.message_id.as_uuid(), conversation)) {
                    continue;
                }
                let Some(count) = counts.get_mut(&conversation) else {
                    return Err(ProjectionError::Inconsistent {
                        projector: NAME,
                        event_type: recorded.event_type.clone(),
                        position: recorded.position,
                        reason: "a message for a conversation that never started",
                    });
                };
                *count += 1;
                *own.entry((district, conversation, e.author_id.as_uuid()))
                    .or_default() += 1;
                let (commit, sequence) = position_columns(recorded.position)?;
                messages.push(vec![
                    Value::from(*district),
                    e.message_id.as_uuid().into(),
                    conversation.into(),
                    (*count).into(),
                    e.author_id.as_uuid().into(),
                    names::sent_as(e.sent_as).into(),
                    e.body.as_str().into(),
                    search::folded(&e.body).into(),
                    e.subject.as_deref().into(),
                    e.subject.as_deref().and_then(search::folded).into(),
                    e.at.into(),
                    commit.into(),
                    sequence.into(),
                    shared_phone_column(&e.shared_phone_with).into(),
                ]);
                last.insert(
                    (district, conversation),
                    vec![
                        Value::from(*district),
                        conversation.into(),
                        (*count).into(),
                        e.message_id.as_uuid().into(),
                        e.author_id.as_uuid().into(),
                        e.body.as_str().into(),
                        e.at.into(),
                        commit.into(),
                        sequence.into(),
                    ],
                );
            }
        }
        execute_rows(tx, messages, CHUNK, |n| {
            render_for(
                engine,
                &format!(
                    "INSERT {{or_fail}} INTO messages{{conversations}}
                        (district, message_id, conversation_id, seq, author_id, sent_as, body,
                         body_folded, subject, subject_folded, sent_at, pos_commit,
                         pos_sequence, shared_phone_with)
                    VALUES {}
                    ON CONFLICT (district, message_id, conversation_id) DO NOTHING",
                    engine.value_rows(n, 14)
                ),
                NAME,
                generation,
            )
        })
        .await?;
        execute_rows(tx, last.into_values().collect(), CHUNK, |n| {
            render_for(
                engine,
                &format!(
                    "WITH v (district, conversation_id, message_count, last_message_id,
                            last_author_id, last_body, last_sent_at, last_commit,
                            last_sequence)
                        AS (VALUES {})
                    UPDATE {{or_fail}} conversations{{conversations}} SET
                        message_count = v.message_count, last_message_id = v.last_message_id,
                        last_author_id = v.last_author_id, last_body = v.last_body,
                        last_sent_at = v.last_sent_at, last_commit = v.last_commit,
                        last_sequence = v.last_sequence
                    FROM v
                    WHERE conversations{{conversations}}.district = v.district
                      AND conversations{{conversations}}.conversation_id = v.conversation_id",
                    engine.value_rows(n, 9)
                ),
                NAME,
                generation,
            )
        })
        .await?;
        let own = own
            .into_iter()
            .map(|((district, conversation, author), count)| {
                own_row(district, conversation, author, count)
            })
            .collect();
        execute_rows(tx, own, CHUNK, |n| {
            render_for(engine, &own_posted(engine, n), NAME, generation)
        })
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Projector for Conversations {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        // 2: `own_after_read`, so unread counts no longer count messages.
        // 3: a message is keyed by its conversation too (message ids are the caller's,
        //    unique only within their conversation).
        // 4: titles, bodies and subjects keep their search copy (`search::folded`).
        // 5: `archived_seq`, so a new message brings a conversation back from the archive;
        //    `refused_replies`, the texts kept but not posted; `shared_phone_with`.
        5
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "conversations",
            "conversation_people",
            "messages",
            "refused_replies",
        ]
    }

    fn schema(&self, engine: Engine, generation: Generation) -> Vec<String> {
        SCHEMA
            .iter()
            .map(|t| render_for(engine, t, NAME, generation))
            .collect()
    }

    /// From version 2 on: the columns added since (a conversation archived there stays
    /// archived until the rebuild's switch, as it was), and the table of refused replies
    /// (empty: the old generation never held them).
    fn bridge_from(&self, engine: Engine, generation: Generation, built_by: u32) -> Vec<Bridge> {
        let r = |t: &str| render_for(engine, t, NAME, generation);
        let column = |table: &str, column, definition: &str| Bridge::AddColumn {
            table: r(table),
            column,
            definition: r(definition),
        };
        if built_by < 2 {
            return Vec::new();
        }
        let mut steps = vec![
            column("conversations{conversations}", "title_folded", "TEXT"),
            column("messages{conversations}", "body_folded", "TEXT"),
            column("messages{conversations}", "subject_folded", "TEXT"),
            column("messages{conversations}", "shared_phone_with", "TEXT"),
            column(
                "conversation_people{conversations}",
                "archived_seq",
                "BIGINT NOT NULL DEFAULT 0",
            ),
            Bridge::Run(r(
                "UPDATE conversation_people{conversations} SET archived_seq =
                    (SELECT c.message_count FROM conversations{conversations} c
                     WHERE c.district = conversation_people{conversations}.district
                       AND c.conversation_id = conversation_people{conversations}.conversation_id)
                WHERE archived = TRUE",
            )),
        ];
        steps.extend(
            SCHEMA
                .iter()
                .filter(|t| t.contains("refused_replies"))
                .map(|t| Bridge::Run(r(t))),
        );
        steps
    }

    /// Runs of messages (most of any log) go in bulk; everything else one by one, in
    /// log order, so a message never precedes the start of its conversation.
    async fn apply_batch(
        &self,
        tx: &mut Tx<'_>,
        generation: Generation,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        for run in message_runs(events) {
            match run {
                Run::Messages(posts) => self.posted_run(tx, generation, &posts).await?,
                Run::Other(e) => self.apply(tx, generation, &e.recorded, &e.event).await?,
            }
        }
        Ok(())
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
            Event::ConversationStarted(e) => {
                let (commit, sequence) = position_columns(recorded.position)?;
                query(&sql.start)
                    .bind(district)
                    .bind(e.conversation_id.as_uuid())
                    .bind(e.school_id.as_uuid())
                    .bind(names::conversation_kind(e.kind))
                    .bind(&e.title)
                    .bind(e.started_by.as_uuid())
                    .bind(e.at)
                    .bind(commit)
                    .bind(sequence)
                    .bind(e.title.as_deref().and_then(search::folded))
                    .execute(tx)
                    .await?;
                for (ordinal, person) in e.participant_ids.iter().enumerate() {
                    query(&sql.participant)
                        .bind(district)
                        .bind(e.conversation_id.as_uuid())
                        .bind(person.as_uuid())
                        .bind(i64::try_from(ordinal).map_err(|_| ProjectionError::OutOfRange)?)
                        .execute(tx)
                        .await?;
                }
            }
            Event::MessagePosted(e) => self.posted_run(tx, generation, &[(recorded, e)]).await?,
            Event::ConversationStopped(e) => {
                query(&sql.stop)
                    .bind(district)
                    .bind(e.conversation_id.as_uuid())
                    .execute(tx)
                    .await?;
            }
            Event::ConversationResumed(e) => {
                query(&sql.resume)
                    .bind(district)
                    .bind(e.conversation_id.as_uuid())
                    .execute(tx)
                    .await?;
            }
            Event::ConversationRenamed(e) => {
                query(&sql.rename)
                    .bind(district)
                    .bind(e.conversation_id.as_uuid())
                    .bind(&e.title)
                    .bind(search::folded(&e.title))
                    .execute(tx)
                    .await?;
            }
            Event::ConversationMuted(e) => {
                toggle(
                    tx,
                    &sql.mute,
                    district,
                    e.conversation_id,
                    e.person_id,
                    true,
                )
                .await?
            }
            Event::ConversationUnmuted(e) => {
                toggle(
                    tx,
                    &sql.mute,
                    district,
                    e.conversation_id,
                    e.person_id,
                    false,
                )
                .await?
            }
            Event::ConversationArchived(e) => {
                toggle(
                    tx,
                    &sql.archive,
                    district,
                    e.conversation_id,
                    e.person_id,
                    true,
                )
                .await?
            }
            Event::ConversationUnarchived(e) => {
                toggle(
                    tx,
                    &sql.archive,
                    district,
                    e.conversation_id,
                    e.person_id,
                    false,
                )
                .await?
            }
            Event::MessagesRead(e) => {
                query(&sql.read)
                    .bind(district)
                    .bind(e.conversation_id.as_uuid())
                    .bind(e.person_id.as_uuid())
                    .bind(e.up_to_message_id.as_uuid())
                    .execute(tx)
                    .await?;
                query(&sql.recount_own)
                    .bind(district)
                    .bind(e.conversation_id.as_uuid())
                    .bind(e.person_id.as_uuid())
                    .execute(tx)
                    .await?;
            }
            Event::InboundReplyRefused(e) => {
                let (commit, sequence) = position_columns(recorded.position)?;
                query(&sql.refused)
                    .bind(district)
                    .bind(e.conversation_id.as_uuid())
                    .bind(e.message_sid.as_str())
                    .bind(e.author_id.as_uuid())
                    .bind(&e.body)
                    // Logs from before the reason was recorded refused only for a stop.
                    .bind(e.reason.as_deref().unwrap_or("conversation_stopped"))
                    .bind(e.at)
                    .bind(commit)
                    .bind(sequence)
                    .bind(shared_phone_column(&e.shared_phone_with))
                    .execute(tx)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// `select` (ending in `WHERE district = `) for `ids` of `district`, by `IN` lists of
/// [`LOOKUP`] ids on `column`: the first column (an id) to the second (a count).
/// Which of the message ids `ids` the read model already holds, with the conversation
/// each is in (the same id may be a message of two conversations).
async fn known_messages(
    tx: &mut Tx<'_>,
    generation: Generation,
    district: &str,
    ids: Vec<Uuid>,
) -> Result<HashSet<(Uuid, Uuid)>, ProjectionError> {
    lookup_rows(
        tx,
        generation,
        "SELECT message_id, conversation_id FROM messages{conversations} WHERE district = ",
        "message_id",
        district,
        ids,
        |row| Ok((row.get::<Uuid, _>(0)?, row.get::<Uuid, _>(1)?)),
    )
    .await
}

/// `select` (ending in `WHERE district = `) for `district` and `column IN ids`, `LOOKUP`
/// ids a statement, as (first column, second column as a number).
async fn lookup(
    tx: &mut Tx<'_>,
    generation: Generation,
    select: &str,
    column: &str,
    district: &str,
    ids: Vec<Uuid>,
) -> Result<HashMap<Uuid, i64>, ProjectionError> {
    lookup_rows(tx, generation, select, column, district, ids, |row| {
        Ok((row.get::<Uuid, _>(0)?, row.get::<i64, _>(1)?))
    })
    .await
}

/// The rows of `select` for `district` and `column IN ids`, `LOOKUP` ids a statement,
/// each turned into an item by `item`.
async fn lookup_rows<T, C: Default + Extend<T>>(
    tx: &mut Tx<'_>,
    generation: Generation,
    select: &str,
    column: &str,
    district: &str,
    ids: Vec<Uuid>,
    item: impl Fn(&crate::db::Row) -> Result<T, sqlx::Error>,
) -> Result<C, ProjectionError> {
    let engine = tx.engine();
    let mut found = C::default();
    for chunk in ids.chunks(LOOKUP) {
        let mut sql = Builder::new(render_for(engine, select, NAME, generation));
        sql.push_bind(district)
            .push(format!(" AND {column} IN ("))
            .push_list(chunk.iter().copied())
            .push(")");
        for row in sql.build().fetch_all(tx).await? {
            found.extend([item(&row)?]);
        }
    }
    Ok(found)
}

async fn toggle(
    tx: &mut Tx<'_>,
    sql: &str,
    district: &str,
    conversation: homeroom_domain::ConversationId,
    person: homeroom_domain::PersonId,
    on: bool,
) -> Result<(), ProjectionError> {
    query(sql)
        .bind(district)
        .bind(conversation.as_uuid())
        .bind(person.as_uuid())
        .bind(on)
        .execute(tx)
        .await?;
    Ok(())
}
