//! Inboxes: a person's own tab, and a school's shared inbox.

use super::{
    conversation_cursor, conversation_kind, count, last_message, uuid, Cursor, Inbox,
    InboxConversation, PageRequest, ReadModels, Snapshot, LAST_MESSAGE,
};
use crate::db::{Builder, Row};
use crate::error::QueryError;
use crate::models::{conversations, deliveries, directory};
use homeroom_domain::visibility::TakingPart;
use homeroom_domain::{sms, DistrictId, PersonId, SchoolId};

const COLUMNS: &str = "c.conversation_id, c.title, c.kind, c.school_id, c.stopped,
    c.last_message_id, c.last_author_id, c.last_sent_at, c.last_commit, c.last_sequence";

/// Whether the person of row `p` has conversation `c` in their archive: they archived it
/// and no message came since (`a_new_message_brings_it_back_from_the_archive` in the
/// domain). A person with no row there never archived it.
const ARCHIVED: &str = "COALESCE(p.archived AND p.archived_seq >= c.message_count, FALSE)";

/// The one delivery of a conversation's last message to the person of row `p` that
/// their inbox previews: a message that fell back to another channel has two (the
/// failed one and the fallback), and the row must still be listed once. The one not
/// failed, else the latest.
const VIEWERS_DELIVERY: &str = "(SELECT v.delivery_id FROM deliveries{deliveries} v
    WHERE v.district = c.district AND v.message_id = c.last_message_id
      AND v.recipient_id = p.person_id AND v.conversation_id = c.conversation_id
    ORDER BY CASE WHEN v.status = 'failed' THEN 1 ELSE 0 END, v.status_at DESC,
      v.delivery_id DESC
    LIMIT 1)";

/// Which text of the last message a row shows.
#[derive(Clone, Copy)]
enum Preview {
    /// The `body` column as selected.
    Body,
    /// The viewer's own copy: the machine translation they were sent (its shared phone
    /// label taken off, as in the thread), else `body` (rendered for them, or written).
    OwnCopy,
}

fn item(row: &Row, preview: Preview) -> Result<InboxConversation, QueryError> {
    let mut last = last_message(row, "body")?;
    if let (Preview::OwnCopy, Some(last)) = (preview, last.as_mut()) {
        let translated: Option<String> = row.get("translated_to")?;
        let sent: Option<String> = row.get("sent_text")?;
        if let (Some(_), Some(sent)) = (translated, sent) {
            let name: Option<String> = row.get("my_name")?;
            let author: Option<String> = row.get("last_author_name")?;
            last.body = sms::own_copy(
                &sent,
                name.as_deref().unwrap_or(""),
                author.as_deref().unwrap_or(""),
            )
            .to_owned();
        }
    }
    Ok(InboxConversation {
        conversation_id: uuid(row, "conversation_id")?.into(),
        title: row.get("title")?,
        kind: conversation_kind(row, "kind")?,
        school_id: uuid(row, "school_id")?.into(),
        last_message: last,
        unread_count: count(row, "unread")?,
        muted: row.get("muted")?,
        archived: row.get("archived")?,
        stopped: row.get("stopped")?,
    })
}

/// Turns `size + 1` fetched rows into a page and its `next` cursor.
fn page(rows: Vec<Row>, size: i64, preview: Preview) -> Result<Inbox, QueryError> {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let more = rows.len() > size;
    let rows = &rows[..rows.len().min(size)];
    let next = match (more, rows.last()) {
        (true, Some(last)) => Some(conversation_cursor(last)?.encode()),
        _ => None,
    };
    Ok(Inbox {
        conversations: rows
            .iter()
            .map(|row| item(row, preview))
            .collect::<Result<_, _>>()?,
        next,
    })
}

impl ReadModels {
    /// A person's own tab: the personal and group conversations they take part in
    /// (and, for students and guardians, the school conversations they take part in:
    /// staff see those in the school inbox, here as if they held it everywhere). Only
    /// conversations where `person` is a participant are ever returned. Most recent
    /// activity first; `archived` picks the archive tab or the main one.
    ///
    /// # Errors
    /// [`QueryError::BadCursor`] for a cursor not handed out here; [`QueryError`] when
    /// the database fails.
    pub async fn inbox_personal(
        &self,
        district: &DistrictId,
        person: PersonId,
        archived: bool,
        page_request: &PageRequest,
    ) -> Result<Inbox, QueryError> {
        self.inbox_personal_at(
            district,
            person,
            &TakingPart::Everywhere,
            None,
            archived,
            page_request,
        )
        .await
    }

    /// [`ReadModels::inbox_personal`] narrowed to the conversations of the schools where
    /// `person` takes part (`visibility::taking_part`): staff who left a school's roles
    /// no longer find its conversations in their tab. `school_boxes` are the schools
    /// whose shared inbox a staff member holds (`visibility::school_inboxes`): a school
    /// conversation they take part in is listed there, and here only for the other
    /// schools (a teacher added to a school's conversation with a family finds it in
    /// their own tab); `None` treats staff as holding every school's box.
    ///
    /// # Errors
    /// As [`ReadModels::inbox_personal`].
    pub async fn inbox_personal_at(
        &self,
        district: &DistrictId,
        person: PersonId,
        taking_part: &TakingPart,
        school_boxes: Option<&[SchoolId]>,
        archived: bool,
        page_request: &PageRequest,
    ) -> Result<Inbox, QueryError> {
        let after = Cursor::decode(page_request.cursor.as_deref(), Cursor::TOP)?;
        let size = page_request.size();
        let mut s = Snapshot::open(
            &self.db,
            &[conversations::NAME, deliveries::NAME, directory::NAME],
        )
        .await?;
        let head = s.sql(&format!(
            "SELECT {COLUMNS}, COALESCE(d.text, c.last_body) AS body, d.sent_text,
                d.translated_to, me.name AS my_name, la.name AS last_author_name,
                p.muted, {ARCHIVED} AS archived,
                c.message_count - p.read_seq - p.own_after_read AS unread,
                lm.sent_as AS last_sent_as
             FROM conversation_people{{conversations}} p
             JOIN conversations{{conversations}} c
               ON c.district = p.district AND c.conversation_id = p.conversation_id
             {LAST_MESSAGE}
             LEFT JOIN deliveries{{deliveries}} d
               ON d.district = c.district AND d.delivery_id = {VIEWERS_DELIVERY}
             LEFT JOIN people{{directory}} me
               ON me.district = p.district AND me.person_id = p.person_id
             LEFT JOIN people{{directory}} la
               ON la.district = c.district AND la.person_id = c.last_author_id
             WHERE p.district = "
        ));
        let mut q = Builder::new(head);
        q.push_bind(district.as_str().to_owned());
        q.push(" AND p.person_id = ");
        q.push_bind(person.as_uuid());
        q.push(format!(" AND p.participant = TRUE AND {ARCHIVED} = "));
        q.push_bind(archived);
        q.push(" AND (c.kind <> 'school' OR COALESCE(me.kind, '') <> 'staff'");
        match school_boxes {
            None => {}
            Some([]) => {
                q.push(" OR 1 = 1");
            }
            Some(schools) => {
                q.push(" OR c.school_id NOT IN (");
                q.push_list(schools.iter().map(|school| school.as_uuid()));
                q.push(")");
            }
        }
        q.push(") AND (c.last_commit, c.last_sequence, c.conversation_id) < (");
        q.push_bind(after.commit);
        q.push(", ");
        q.push_bind(after.sequence);
        q.push(", ");
        q.push_bind(after.id);
        q.push(")");
        match taking_part {
            TakingPart::Everywhere => {}
            TakingPart::Schools(schools) if schools.is_empty() => {
                q.push(" AND 1 = 0");
            }
            TakingPart::Schools(schools) => {
                q.push(" AND c.school_id IN (");
                q.push_list(schools.iter().map(|school| school.as_uuid()));
                q.push(")");
            }
        }
        q.push(" ORDER BY c.last_commit DESC, c.last_sequence DESC, c.conversation_id DESC LIMIT ");
        q.push_bind(size + 1);
        let rows = q.build().fetch_all(&mut s.tx).await?;
        page(rows, size, Preview::OwnCopy)
    }

    /// The shared inbox of `school_ids` (the schools where the viewer holds
    /// `school_inbox`): every school conversation there, with the viewer's own mute,
    /// archive and unread count (the family's messages they have not read; what staff
    /// wrote there is not unread for anyone). Most recent activity first.
    ///
    /// # Errors
    /// [`QueryError::BadCursor`] for a cursor not handed out here; [`QueryError`] when
    /// the database fails.
    pub async fn inbox_school(
        &self,
        district: &DistrictId,
        school_ids: &[SchoolId],
        viewer: PersonId,
        archived: bool,
        page_request: &PageRequest,
    ) -> Result<Inbox, QueryError> {
        let after = Cursor::decode(page_request.cursor.as_deref(), Cursor::TOP)?;
        let size = page_request.size();
        if school_ids.is_empty() {
            return Ok(Inbox {
                conversations: Vec::new(),
                next: None,
            });
        }
        let mut s = Snapshot::open(&self.db, &[conversations::NAME, directory::NAME]).await?;
        // Unread is what the family wrote past the viewer's read position: whatever
        // staff wrote (from the school or as themselves, the viewer included) is the
        // school's own side of the conversation. A viewer without a row there never
        // read in it: all of that is unread.
        let head = s.sql(&format!(
            "SELECT {COLUMNS}, c.last_body AS body,
                COALESCE(p.muted, FALSE) AS muted, {ARCHIVED} AS archived,
                (SELECT COUNT(*) FROM messages{{conversations}} m
                 LEFT JOIN people{{directory}} a
                   ON a.district = m.district AND a.person_id = m.author_id
                 WHERE m.district = c.district AND m.conversation_id = c.conversation_id
                   AND m.seq > COALESCE(p.read_seq, 0)
                   AND COALESCE(a.kind, '') <> 'staff') AS unread,
                lm.sent_as AS last_sent_as
             FROM conversations{{conversations}} c
             {LAST_MESSAGE}
             LEFT JOIN conversation_people{{conversations}} p
               ON p.district = c.district AND p.conversation_id = c.conversation_id
              AND p.person_id = "
        ));
        let mut q = Builder::new(head);
        q.push_bind(viewer.as_uuid());
        q.push(" WHERE c.district = ");
        q.push_bind(district.as_str().to_owned());
        q.push(format!(" AND c.kind = 'school' AND {ARCHIVED} = "));
        q.push_bind(archived);
        q.push(" AND c.school_id IN (");
        q.push_list(school_ids.iter().map(|s| s.as_uuid()));
        q.push(") AND (c.last_commit, c.last_sequence, c.conversation_id) < (");
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
        page(rows, size, Preview::Body)
    }
}
