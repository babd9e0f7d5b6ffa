//! Oversight: every conversation of a school or the district, personal ones included.

use super::{
    conversation_cursor, conversation_kind, count, last_message, person_kind, time, uuid, Cursor,
    Oversight, OversightConversation, OversightFilter, OversightScope, PageRequest, Participant,
    ReadModels, Snapshot, LAST_MESSAGE,
};
use crate::db::Builder;
use crate::error::QueryError;
use crate::models::{conversations, directory};
use crate::search;
use homeroom_domain::{ConversationId, DistrictId};
use std::collections::HashMap;
use uuid::Uuid;

impl ReadModels {
    /// Every conversation in `scope` matching `filter`, most recent activity first.
    /// `q` matches (as plain text, ignoring case and accents: [`search`]) the title, any
    /// message's body or subject, or a participant's name; `since`/`until` keep
    /// conversations with a message sent in `[since, until)`.
    ///
    /// # Errors
    /// [`QueryError::BadCursor`] for a cursor not handed out here; [`QueryError`] when
    /// the database fails.
    pub async fn oversight(
        &self,
        district: &DistrictId,
        scope: &OversightScope,
        filter: &OversightFilter,
        page: &PageRequest,
    ) -> Result<Oversight, QueryError> {
        let after = Cursor::decode(page.cursor.as_deref(), Cursor::TOP)?;
        let size = page.size();
        let empty = Oversight {
            conversations: Vec::new(),
            next: None,
        };
        if matches!(scope, OversightScope::Schools(s) if s.is_empty()) {
            return Ok(empty);
        }
        let mut s = Snapshot::open(&self.db, &[conversations::NAME, directory::NAME]).await?;
        let d = district.as_str().to_owned();
        let mut q = Builder::new(s.sql(&format!(
            "SELECT c.conversation_id, c.title, c.kind, c.school_id, c.started_by, c.started_at,
                    c.stopped, c.message_count, c.last_message_id, c.last_author_id,
                    c.last_body, c.last_sent_at, c.last_commit, c.last_sequence,
                    lm.sent_as AS last_sent_as
             FROM conversations{{conversations}} c
             {LAST_MESSAGE}
             WHERE c.district = ",
        )));
        q.push_bind(d.clone());
        if let OversightScope::Schools(schools) = scope {
            q.push(" AND c.school_id IN (");
            q.push_list(schools.iter().map(|s| s.as_uuid()));
            q.push(")");
        }
        let like_ci = s.engine().like_ci();
        if let Some(text) = filter.q.as_deref().filter(|t| !t.trim().is_empty()) {
            let pattern = search::pattern(text.trim());
            q.push(format!(
                " AND (COALESCE(c.title_folded, c.title) {like_ci} "
            ));
            q.push_bind(pattern.clone());
            q.push(s.sql(&format!(
                " ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages{{conversations}} m
                   WHERE m.district = c.district AND m.conversation_id = c.conversation_id
                     AND (COALESCE(m.body_folded, m.body) {like_ci} "
            )));
            q.push_bind(pattern.clone());
            q.push(format!(
                " ESCAPE '\\' OR COALESCE(m.subject_folded, m.subject) {like_ci} "
            ));
            q.push_bind(pattern.clone());
            q.push(s.sql(&format!(
                " ESCAPE '\\')) OR EXISTS (SELECT 1 FROM conversation_people{{conversations}} p
                   JOIN people{{directory}} n ON n.district = p.district AND n.person_id = p.person_id
                   WHERE p.district = c.district AND p.conversation_id = c.conversation_id
                     AND p.participant = TRUE
                     AND COALESCE(n.name_folded, n.name) {like_ci} "
            )));
            q.push_bind(pattern);
            q.push(" ESCAPE '\\'))");
        }
        if let Some(person) = filter.participant {
            q.push(s.sql(
                " AND EXISTS (SELECT 1 FROM conversation_people{conversations} p
                   WHERE p.district = c.district AND p.conversation_id = c.conversation_id
                     AND p.participant = TRUE AND p.person_id = ",
            ));
            q.push_bind(person.as_uuid());
            q.push(")");
        }
        if filter.since.is_some() || filter.until.is_some() {
            q.push(s.sql(
                " AND EXISTS (SELECT 1 FROM messages{conversations} m
                   WHERE m.district = c.district AND m.conversation_id = c.conversation_id",
            ));
            if let Some(since) = filter.since {
                q.push(" AND m.sent_at >= ");
                q.push_bind(since);
            }
            if let Some(until) = filter.until {
                q.push(" AND m.sent_at < ");
                q.push_bind(until);
            }
            q.push(")");
        }
        q.push(" AND (c.last_commit, c.last_sequence, c.conversation_id) < (");
        q.push_bind(after.commit);
        q.push(", ");
        q.push_bind(after.sequence);
        q.push(", ");
        q.push_bind(after.id);
        q.push(
            ") ORDER BY c.last_commit DESC, c.last_sequence DESC, c.conversation_id DESC LIMIT ",
        );
        q.push_bind(size + 1);
        let rows = q.build().fetch_all(&mut s.tx).await?;

        let limit = usize::try_from(size).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        let rows = &rows[..rows.len().min(limit)];
        let next = match (more, rows.last()) {
            (true, Some(last)) => Some(conversation_cursor(last)?.encode()),
            _ => None,
        };
        if rows.is_empty() {
            return Ok(empty);
        }

        let ids = rows
            .iter()
            .map(|r| uuid(r, "conversation_id"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut participants: HashMap<Uuid, Vec<Participant>> = HashMap::new();
        let mut q = Builder::new(s.sql(
            "SELECT p.conversation_id, p.person_id, n.name, n.kind
             FROM conversation_people{conversations} p
             LEFT JOIN people{directory} n ON n.district = p.district AND n.person_id = p.person_id
             WHERE p.participant = TRUE AND p.district = ",
        ));
        q.push_bind(d);
        q.push(" AND p.conversation_id IN (");
        q.push_list(ids.iter().copied());
        q.push(") ORDER BY p.conversation_id, p.ordinal");
        for row in q.build().fetch_all(&mut s.tx).await? {
            participants
                .entry(uuid(&row, "conversation_id")?)
                .or_default()
                .push(Participant {
                    person_id: uuid(&row, "person_id")?.into(),
                    name: row.get("name")?,
                    kind: person_kind(&row, "kind")?,
                });
        }

        let mut conversations = Vec::with_capacity(rows.len());
        for row in rows {
            let id = uuid(row, "conversation_id")?;
            conversations.push(OversightConversation {
                conversation_id: ConversationId::new(id),
                title: row.get("title")?,
                kind: conversation_kind(row, "kind")?,
                school_id: uuid(row, "school_id")?.into(),
                started_by: uuid(row, "started_by")?.into(),
                started_at: time(row, "started_at")?,
                stopped: row.get("stopped")?,
                message_count: count(row, "message_count")?,
                last_message: last_message(row, "last_body")?,
                participants: participants.remove(&id).unwrap_or_default(),
            });
        }
        Ok(Oversight {
            conversations,
            next,
        })
    }
}
