//! The audit trail.

use super::{time, uuid, AuditEvent, AuditFilter, AuditPage, ReadModels, Snapshot};
use crate::db::{position_columns, position_from, Builder};
use crate::error::QueryError;
use crate::models::audit;
use homeroom_domain::DistrictId;
use homeroom_eventstore::Position;

/// Every column of an audit row, in the order [`audit_event`] reads them.
const AUDIT_COLUMNS: &str = "district, pos_commit, pos_sequence, event_id, stream, version, type,
    schema_version, recorded_at, actor, school, correlation_id, causation_id, command_id, hash,
    prev_hash, data";

/// One audit row as an [`AuditEvent`].
fn audit_event(row: &crate::db::Row) -> Result<AuditEvent, QueryError> {
    let position = position_from(row.get("pos_commit")?, row.get("pos_sequence")?)
        .ok_or(QueryError::Corrupt("position"))?;
    let data: String = row.get("data")?;
    let version: i64 = row.get("version")?;
    let schema_version: i64 = row.get("schema_version")?;
    Ok(AuditEvent {
        position,
        stream: row.get("stream")?,
        version: u64::try_from(version).map_err(|_| QueryError::Corrupt("version"))?,
        event_type: row.get("type")?,
        recorded_at: time(row, "recorded_at")?,
        actor: row.get("actor")?,
        district: row.get("district")?,
        correlation_id: uuid(row, "correlation_id")?,
        causation_id: uuid(row, "causation_id")?,
        hash: row.get("hash")?,
        prev_hash: row.get("prev_hash")?,
        data: serde_json::from_str(&data).map_err(|_| QueryError::Corrupt("event data"))?,
        event_id: uuid(row, "event_id")?,
        schema_version: u32::try_from(schema_version)
            .map_err(|_| QueryError::Corrupt("schema version"))?,
        school: row.get("school")?,
        command_id: uuid(row, "command_id")?,
    })
}

impl ReadModels {
    /// Every event of `district` matching `filter`, in position order: `stream` and
    /// `actor` match exactly, `since`/`until` bound the recorded time (`[since,
    /// until)`), `after` continues from a previous page's `next`.
    ///
    /// # Errors
    /// [`QueryError::BadCursor`] for an `after` beyond the stored range;
    /// [`QueryError`] when the database fails.
    pub async fn audit(
        &self,
        district: &DistrictId,
        filter: &AuditFilter,
    ) -> Result<AuditPage, QueryError> {
        let size: i64 = match filter.limit {
            0 => 100,
            n => i64::from(n.min(1000)),
        };
        let mut s = Snapshot::open(&self.db, &[audit::NAME]).await?;
        let mut q = Builder::new(s.sql(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events{{audit}} WHERE district = "
        )));
        q.push_bind(district.as_str().to_owned());
        if let Some(stream) = &filter.stream {
            q.push(" AND stream = ");
            q.push_bind(stream.clone());
        }
        if let Some(actor) = &filter.actor {
            q.push(" AND actor = ");
            q.push_bind(actor.clone());
        }
        if let Some(since) = filter.since {
            q.push(" AND recorded_at >= ");
            q.push_bind(since);
        }
        if let Some(until) = filter.until {
            q.push(" AND recorded_at < ");
            q.push_bind(until);
        }
        if let Some(after) = filter.after {
            push_position_bound(&mut q, ">", after)?;
        }
        q.push(" ORDER BY pos_commit, pos_sequence LIMIT ");
        q.push_bind(size + 1);
        let rows = q.build().fetch_all(&mut s.tx).await?;

        let limit = usize::try_from(size).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        let mut events = Vec::with_capacity(rows.len().min(limit));
        for row in rows.iter().take(limit) {
            events.push(audit_event(row)?);
        }
        let next = if more {
            events.last().map(|e| e.position)
        } else {
            None
        };
        Ok(AuditPage { events, next })
    }

    /// One page of `district`'s audit trail in log order, every column of each event:
    /// what verification compares with the log itself, field by field. Entries after
    /// `after` and at or before `up_to`, at most `limit`.
    ///
    /// # Errors
    /// [`QueryError`] when the database fails.
    pub async fn audit_trail_page(
        &self,
        district: &str,
        after: Option<Position>,
        up_to: Position,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, QueryError> {
        let mut s = Snapshot::open(&self.db, &[audit::NAME]).await?;
        let mut q = Builder::new(s.sql(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events{{audit}} WHERE district = "
        )));
        q.push_bind(district.to_owned());
        if let Some(after) = after {
            push_position_bound(&mut q, ">", after)?;
        }
        push_position_bound(&mut q, "<=", up_to)?;
        q.push(" ORDER BY pos_commit, pos_sequence LIMIT ");
        q.push_bind(limit);
        let mut entries = Vec::new();
        for row in q.build().fetch_all(&mut s.tx).await? {
            entries.push(audit_event(&row)?);
        }
        Ok(entries)
    }

    /// The position of the last event the audit trail holds of `district` (of any
    /// district when `None`), if any.
    ///
    /// # Errors
    /// [`QueryError`] when the database fails.
    pub async fn audit_trail_head(
        &self,
        district: Option<&str>,
    ) -> Result<Option<Position>, QueryError> {
        let mut s = Snapshot::open(&self.db, &[audit::NAME]).await?;
        let mut q = Builder::new(
            s.sql("SELECT pos_commit, pos_sequence FROM audit_events{audit} WHERE 1 = 1"),
        );
        if let Some(district) = district {
            q.push(" AND district = ");
            q.push_bind(district.to_owned());
        }
        q.push(" ORDER BY pos_commit DESC, pos_sequence DESC LIMIT 1");
        match q.build().fetch_optional(&mut s.tx).await? {
            Some(row) => Ok(Some(
                position_from(row.get("pos_commit")?, row.get("pos_sequence")?)
                    .ok_or(QueryError::Corrupt("position"))?,
            )),
            None => Ok(None),
        }
    }
}

/// Appends ` AND (pos_commit, pos_sequence) {op} (…)` for `position`.
fn push_position_bound(q: &mut Builder, op: &str, position: Position) -> Result<(), QueryError> {
    let (commit, sequence) = position_columns(position).map_err(|_| QueryError::BadCursor)?;
    q.push(format!(" AND (pos_commit, pos_sequence) {op} ("));
    q.push_bind(commit);
    q.push(", ");
    q.push_bind(sequence);
    q.push(")");
    Ok(())
}
