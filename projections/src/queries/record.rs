//! A student's message record.

use super::{
    channel, conversation_kind, failure, opt_time, sent_as, status, time, uuid, Cursor, Direction,
    MessageDelivery, PageRequest, ReadModels, RecordDelivery, RecordEntry, Snapshot, StudentRecord,
};
use crate::db::{query, Builder};
use crate::error::QueryError;
use crate::models::{conversations, deliveries, directory};
use chrono::{DateTime, Utc};
use homeroom_domain::visibility::RecordAccess;
use homeroom_domain::{ConversationId, DistrictId, MessageId, PersonId};
use std::collections::HashMap;
use uuid::Uuid;

impl ReadModels {
    /// The messages logged on `student`'s record, oldest first: every message written
    /// by staff in a conversation of one of `access.schools` where the student or one
    /// of their guardians takes part (outbound), and, in conversations of
    /// `access.inbound_schools`, the replies the student and their guardians wrote
    /// there (inbound). Other families' messages in a shared group are on their own
    /// students' records, not this one; what another school wrote to a guardian is on
    /// the record of that school's child.
    ///
    /// The query layer passes `access` as the viewer's `student_record` and
    /// `inbound_replies` permissions reach (`visibility::student_record_access`).
    ///
    /// # Errors
    /// [`QueryError::BadCursor`] for a cursor not handed out here; [`QueryError`] when
    /// the database fails.
    pub async fn student_record(
        &self,
        district: &DistrictId,
        student: PersonId,
        access: &RecordAccess,
        page: &PageRequest,
    ) -> Result<StudentRecord, QueryError> {
        let after = Cursor::decode(page.cursor.as_deref(), Cursor::BOTTOM)?;
        if access.schools.is_empty() {
            return Ok(StudentRecord {
                student_id: student,
                messages: Vec::new(),
                next: None,
            });
        }
        let size = page.size();
        let d = district.as_str().to_owned();
        let mut s = Snapshot::open(
            &self.db,
            &[conversations::NAME, deliveries::NAME, directory::NAME],
        )
        .await?;

        // The student, and each time a guardian was linked to them: a guardian counts
        // for what was written while their link held, from its start to its end, if it
        // ended (a custody change does not rewrite the record, and what was written to
        // a guardian before the link, or between two links, is not about this student).
        let sql = s.sql(
            "SELECT guardian_id, linked_at, unlinked_at FROM guardian_links{directory}
             WHERE district = $1 AND student_id = $2 ORDER BY guardian_id, linked_at",
        );
        let mut links: Vec<Link> = Vec::new();
        for row in query(&sql)
            .bind(&d)
            .bind(student.as_uuid())
            .fetch_all(&mut s.tx)
            .await?
        {
            links.push(Link {
                guardian: row.get("guardian_id")?,
                from: time(&row, "linked_at")?,
                until: opt_time(&row, "unlinked_at")?,
            });
        }
        let student_id = student.as_uuid();

        let head = s.sql(
            "SELECT m.message_id, m.conversation_id, c.kind AS conversation_kind, m.author_id,
                    a.name AS author_name, a.kind AS author_kind, m.sent_as, m.sent_at, m.body,
                    m.pos_commit, m.pos_sequence
             FROM messages{conversations} m
             JOIN conversations{conversations} c
               ON c.district = m.district AND c.conversation_id = m.conversation_id
             LEFT JOIN people{directory} a
               ON a.district = m.district AND a.person_id = m.author_id
             WHERE m.district = ",
        );
        let taking_part = s.sql(
            "m.conversation_id IN (
                SELECT p.conversation_id FROM conversation_people{conversations} p
                WHERE p.district = m.district AND p.participant = TRUE AND p.person_id IN (",
        );
        let mut q = Builder::new(head);
        q.push_bind(d.clone());
        q.push(" AND (");
        q.push(&taking_part);
        q.push_bind(student_id);
        q.push("))");
        for link in &links {
            q.push(" OR (");
            link.push_held(&mut q);
            q.push(" AND ");
            q.push(&taking_part);
            q.push_bind(link.guardian);
            q.push(")))");
        }
        q.push(") AND c.school_id IN (");
        q.push_list(access.schools.iter().map(|s| s.as_uuid()));
        q.push(") AND (COALESCE(a.kind, 'staff') = 'staff'");
        if !access.inbound_schools.is_empty() {
            q.push(" OR ((m.author_id = ");
            q.push_bind(student_id);
            for link in &links {
                q.push(" OR (m.author_id = ");
                q.push_bind(link.guardian);
                q.push(" AND ");
                link.push_held(&mut q);
                q.push(")");
            }
            q.push(") AND c.school_id IN (");
            q.push_list(access.inbound_schools.iter().map(|s| s.as_uuid()));
            q.push("))");
        }
        q.push(") AND (m.pos_commit, m.pos_sequence, m.message_id) > (");
        q.push_bind(after.commit);
        q.push(", ");
        q.push_bind(after.sequence);
        q.push(", ");
        q.push_bind(after.id);
        q.push(") ORDER BY m.pos_commit, m.pos_sequence, m.message_id LIMIT ");
        q.push_bind(size + 1);
        let rows = q.build().fetch_all(&mut s.tx).await?;

        let limit = usize::try_from(size).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        let rows = &rows[..rows.len().min(limit)];
        let next = match (more, rows.last()) {
            (true, Some(last)) => Some(
                Cursor {
                    commit: last.get("pos_commit")?,
                    sequence: last.get("pos_sequence")?,
                    id: uuid(last, "message_id")?,
                }
                .encode(),
            ),
            _ => None,
        };

        let mut by_message: HashMap<(MessageId, ConversationId), Vec<RecordDelivery>> =
            HashMap::new();
        if !rows.is_empty() {
            let head = s.sql(
                "SELECT delivery_id, message_id, conversation_id, recipient_id, channel, status,
                        status_at, text, sent_text, error
                 FROM deliveries{deliveries} WHERE district = ",
            );
            let mut q = Builder::new(head);
            q.push_bind(d.clone());
            q.push(" AND message_id IN (");
            let ids = rows
                .iter()
                .map(|r| uuid(r, "message_id"))
                .collect::<Result<Vec<_>, _>>()?;
            q.push_list(ids);
            q.push(") ORDER BY message_id, recipient_id");
            for row in q.build().fetch_all(&mut s.tx).await? {
                // A message id is unique only within its conversation.
                let key: (MessageId, ConversationId) = (
                    uuid(&row, "message_id")?.into(),
                    uuid(&row, "conversation_id")?.into(),
                );
                by_message.entry(key).or_default().push(RecordDelivery {
                    delivery: MessageDelivery {
                        delivery_id: uuid(&row, "delivery_id")?.into(),
                        recipient_id: uuid(&row, "recipient_id")?.into(),
                        channel: channel(&row, "channel")?,
                        status: status(&row, "status")?,
                        status_at: time(&row, "status_at")?,
                        error: failure(&row)?,
                    },
                    text: row.get("text")?,
                    sent_text: row.get("sent_text")?,
                });
            }
        }

        let mut messages = Vec::with_capacity(rows.len());
        for row in rows {
            let message_id: MessageId = uuid(row, "message_id")?.into();
            let conversation_id: ConversationId = uuid(row, "conversation_id")?.into();
            let author = uuid(row, "author_id")?;
            let sent_at = time(row, "sent_at")?;
            // Of the family when it was written: a guardian while their link held.
            let of_the_family = |person: Uuid| {
                person == student_id
                    || links
                        .iter()
                        .any(|link| link.guardian == person && link.held_at(sent_at))
            };
            let direction = if of_the_family(author) {
                Direction::Inbound
            } else {
                Direction::Outbound
            };
            let mut deliveries = by_message
                .remove(&(message_id, conversation_id))
                .unwrap_or_default();
            if direction == Direction::Outbound {
                deliveries.retain(|d| of_the_family(d.delivery.recipient_id.as_uuid()));
            }
            messages.push(RecordEntry {
                message_id,
                conversation_id,
                conversation_kind: conversation_kind(row, "conversation_kind")?,
                direction,
                sender_id: author.into(),
                sender_name: row.get("author_name")?,
                sent_as: sent_as(row, "sent_as")?,
                sent_at,
                body: row.get("body")?,
                deliveries,
            });
        }
        Ok(StudentRecord {
            student_id: student,
            messages,
            next,
        })
    }
}

/// One time a guardian was linked to the student: from `from`, until `until` if the
/// link ended.
struct Link {
    guardian: Uuid,
    from: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
}

impl Link {
    /// Whether a message sent at `at` was written while the link held.
    fn held_at(&self, at: DateTime<Utc>) -> bool {
        self.from <= at && self.until.is_none_or(|until| at < until)
    }

    /// [`Link::held_at`] as SQL over the message `m`.
    fn push_held(&self, q: &mut Builder<'_>) {
        q.push("m.sent_at >= ");
        q.push_bind(self.from);
        if let Some(until) = self.until {
            q.push(" AND m.sent_at < ");
            q.push_bind(until);
        }
    }
}
