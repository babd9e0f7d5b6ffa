//! Checking the log for tampering: every stream's hash chain, and the log against the
//! audit trail.
//!
//! A hash chain shows an event changed or taken out of the middle of its stream, but not
//! its stream's last events taken away (what is left still links), nor a stream whose
//! events were rewritten with their hashes recomputed. The audit trail is a copy of
//! every event with its hash, written as the log was, so it shows both: an event it
//! holds that the log no longer does, or holds with another hash, is reported broken,
//! as is an event of the log the trail skipped while holding later ones. Both are read
//! in log order up to the head the check started at, so writes during the check are no
//! false alarm, and a trail that lags simply ends early. (A trail rebuilt from an
//! already altered log agrees with it: keep exports of the trail for that.)

use homeroom_eventstore::hash::{ChainLink, LogVerifier};
use homeroom_eventstore::{EventReader, Position, RecordedEvent, StoreError, StreamId};
use homeroom_projections::queries::AuditEvent;
use homeroom_projections::ReadModels;
use std::collections::{HashMap, VecDeque};

/// Events (and trail entries) read per round trip.
const PAGE: usize = 1_000;

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// Events of the log checked.
    pub checked: u64,
    /// Broken events as (stream, version): a chain that does not hold, or the log and
    /// the trail disagreeing there, in the order found.
    pub broken: Vec<(String, u64)>,
}

/// Why a check could not be made.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The log could not be read.
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    /// The audit trail could not be read.
    #[error("audit trail: {0}")]
    Trail(#[from] homeroom_projections::QueryError),
}

/// Checks the log of `district` (every district when `None`): the hash chains, and,
/// with `trail`, the log against the audit trail (see the module's documentation).
///
/// # Errors
/// [`VerifyError`] when the log or the trail cannot be read.
pub async fn verify<R: EventReader + ?Sized>(
    log: &R,
    trail: Option<&ReadModels>,
    district: Option<&str>,
) -> Result<Verification, VerifyError> {
    // The trail's end first, then the log's: every entry the trail held then was in the
    // log then, so entries up to the later of the two are no false alarm, also when the
    // very last event of the log was the one taken out.
    let trail_end = match trail {
        Some(trail) => trail.audit_trail_head(district).await?,
        None => None,
    };
    let log_end = log.head().await?;
    let up_to = trail_end.map_or(log_end, |t| t.max(log_end));
    let mut chains = LogVerifier::new();
    let mut disagreements = Vec::new();
    let mut cursors: HashMap<String, TrailCursor> = HashMap::new();
    if let Some(d) = district {
        cursors.insert(d.to_owned(), TrailCursor::new(d));
    }
    let mut after = Position::START;
    'log: loop {
        let page = log.read_all(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in &page {
            if event.position > log_end {
                break 'log;
            }
            if district.is_some_and(|d| event.metadata.district != d) {
                continue;
            }
            chains.check(event);
            if let Some(trail) = trail {
                let cursor = cursors
                    .entry(event.metadata.district.clone())
                    .or_insert_with(|| TrailCursor::new(&event.metadata.district));
                cursor
                    .compare(trail, up_to, event, &mut disagreements)
                    .await?;
            }
        }
    }
    // What the trail still holds past the log's last event of its district was taken
    // out of the log.
    if let Some(trail) = trail {
        for cursor in cursors.values_mut() {
            while let Some(entry) = cursor.next(trail, up_to).await? {
                disagreements.push(broken_at(&entry));
            }
        }
    }
    let mut broken: Vec<(String, u64)> = chains
        .broken()
        .iter()
        .map(|(stream, version)| (stream.to_string(), *version))
        .collect();
    for found in disagreements {
        if !broken.contains(&found) {
            broken.push(found);
        }
    }
    Ok(Verification {
        checked: chains.checked(),
        broken,
    })
}

/// Where one district's trail is being read.
struct TrailCursor {
    district: String,
    page: VecDeque<AuditEvent>,
    after: Option<Position>,
    exhausted: bool,
}

impl TrailCursor {
    fn new(district: &str) -> Self {
        Self {
            district: district.to_owned(),
            page: VecDeque::new(),
            after: None,
            exhausted: false,
        }
    }

    /// The next entry, reading the next page when this one is used up.
    async fn peek(
        &mut self,
        trail: &ReadModels,
        up_to: Position,
    ) -> Result<Option<&AuditEvent>, VerifyError> {
        if self.page.is_empty() && !self.exhausted {
            let limit = i64::try_from(PAGE).unwrap_or(i64::MAX);
            let next = trail
                .audit_trail_page(&self.district, self.after, up_to, limit)
                .await?;
            self.exhausted = next.len() < PAGE;
            self.after = next.last().map(|e| e.position).or(self.after);
            self.page.extend(next);
        }
        Ok(self.page.front())
    }

    async fn next(
        &mut self,
        trail: &ReadModels,
        up_to: Position,
    ) -> Result<Option<AuditEvent>, VerifyError> {
        self.peek(trail, up_to).await?;
        Ok(self.page.pop_front())
    }

    /// Moves past `event` in the trail, noting where the two disagree.
    async fn compare(
        &mut self,
        trail: &ReadModels,
        up_to: Position,
        event: &RecordedEvent,
        disagreements: &mut Vec<(String, u64)>,
    ) -> Result<(), VerifyError> {
        loop {
            let Some(entry) = self.peek(trail, up_to).await? else {
                // The trail has not got this far yet.
                return Ok(());
            };
            if entry.position < event.position {
                // Recorded in the trail, gone from the log.
                disagreements.push(broken_at(entry));
                self.page.pop_front();
                continue;
            }
            if entry.position == event.position {
                if !agrees(entry, event) {
                    disagreements.push((event.stream.to_string(), event.version));
                }
                self.page.pop_front();
            } else {
                // The trail went on past an event it never recorded: put in afterwards.
                disagreements.push((event.stream.to_string(), event.version));
            }
            return Ok(());
        }
    }
}

/// Whether the trail holds `event` exactly as the log does: every field, not only its
/// hash, so a row of the trail edited in place (another text, another author under the
/// old hash) is caught as surely as an event of the log rewritten.
fn agrees(entry: &AuditEvent, event: &RecordedEvent) -> bool {
    let m = &event.metadata;
    entry.hash == event.hash
        && entry.prev_hash == event.prev_hash
        && entry.stream == event.stream.as_str()
        && entry.version == event.version
        && entry.event_id == event.event_id
        && entry.event_type == event.event_type
        && entry.schema_version == event.schema_version
        && entry.data == event.data
        // Both engines keep microseconds.
        && entry.recorded_at.timestamp_micros() == event.recorded_at.timestamp_micros()
        && entry.district == m.district
        && entry.actor == m.actor
        && entry.school == m.school
        && entry.correlation_id == m.correlation_id
        && entry.causation_id == m.causation_id
        && entry.command_id == m.command_id
}

fn broken_at(entry: &AuditEvent) -> (String, u64) {
    (entry.stream.clone(), entry.version)
}

/// What checking an export of the log (`homeroom audit export`) against the log found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportCheck {
    /// Events of the export checked.
    pub checked: u64,
    /// Exported events whose hash does not recompute from their own fields, or does
    /// not link to the event before them in the export: the file itself was altered.
    pub altered_in_file: Vec<(String, u64)>,
    /// Exported events the log holds otherwise (any field): the log was rewritten
    /// since the export, even if its hashes were recomputed.
    pub changed_in_log: Vec<(String, u64)>,
    /// Exported events the log no longer holds (no event at their stream and version).
    pub missing_from_log: Vec<(String, u64)>,
    /// Events of the exported district the log holds before the file's last event but
    /// the file lacks: lines taken out of the file (an export holds the district's whole
    /// log up to its end; a file cut short at its end reads as an earlier export).
    pub missing_from_file: Vec<(String, u64)>,
}

impl ExportCheck {
    /// Whether the export and the log agree on every exported event.
    pub fn holds(&self) -> bool {
        self.altered_in_file.is_empty()
            && self.changed_in_log.is_empty()
            && self.missing_from_log.is_empty()
            && self.missing_from_file.is_empty()
    }
}

/// Compares an export, kept apart from the instance (another machine, write-once
/// storage), with the log as it is now: what proves, years later, that the log still
/// says what it said then. The export is checked on its own first (each event's hash
/// recomputed from its fields, each chained to the one before it in its stream), then
/// event by event against the log, both in log order, in one pass over the log.
///
/// An event is found in the log by its stream and version, never by its position: a log
/// moved to another engine (`homeroom migrate sqlite-to-postgres`) holds every event as
/// it was, in the same order, under positions of the new engine's shape, and an export
/// taken before the move must still check.
pub struct ExportChecker<'a, R: EventReader + ?Sized> {
    log: &'a R,
    page: VecDeque<RecordedEvent>,
    after: Position,
    exhausted: bool,
    /// Where each stream's chain stands in the file so far.
    links: HashMap<StreamId, ChainLink>,
    /// The position of the last exported event compared with the log.
    last_position: Option<Position>,
    found: ExportCheck,
}

impl<'a, R: EventReader + ?Sized> ExportChecker<'a, R> {
    /// A check against `log`, before any exported event.
    pub fn new(log: &'a R) -> Self {
        Self {
            log,
            page: VecDeque::new(),
            after: Position::START,
            exhausted: false,
            links: HashMap::new(),
            last_position: None,
            found: ExportCheck::default(),
        }
    }

    /// Checks the next exported event (they come in log order, as exported).
    ///
    /// In the file, a stream's events run from version 1 without a gap (an export holds
    /// the district's whole log), each hash recomputes from its event's fields, and each
    /// event links to the one before it; an event that breaks any of that, or comes out
    /// of log order, is `altered_in_file`. An event of the district the log holds before
    /// this one and the file skipped is `missing_from_file`. Against the log, an event is
    /// `changed_in_log`
    /// when the log holds it otherwise (for an event altered in the file, only when the
    /// log's hash is not the file's: the file is no evidence for what it changed).
    ///
    /// # Errors
    /// [`VerifyError::Store`] when the log cannot be read.
    pub async fn check(&mut self, exported: &RecordedEvent) -> Result<(), VerifyError> {
        self.found.checked += 1;
        let at = (exported.stream.to_string(), exported.version);
        let in_order = self.last_position.is_none_or(|p| exported.position > p);
        // A line out of log order is not fed to its stream's chain: the events after
        // it then show where it should have been.
        let intact = in_order
            && self
                .links
                .entry(exported.stream.clone())
                .or_default()
                .accept(exported);
        if !intact {
            self.found.altered_in_file.push(at.clone());
        }
        if !in_order {
            // A line moved or repeated: the log was compared at its first place.
            return Ok(());
        }
        self.last_position = Some(exported.position);
        let in_log = self
            .log
            .read_stream(&exported.stream, exported.version.saturating_sub(1), 1)
            .await?
            .into_iter()
            .next()
            .filter(|event| event.version == exported.version);
        let Some(event) = in_log else {
            self.found.missing_from_log.push(at);
            return Ok(());
        };
        let changed = if intact {
            !event.is_same_event_as(exported)
        } else {
            event.hash != exported.hash
        };
        if changed {
            self.found.changed_in_log.push(at);
        }
        self.walk_log_to(&event).await
    }

    /// Moves through the log up to `found` (the log's copy of the exported event just
    /// checked), noting the events of its district it passes that the file skipped.
    async fn walk_log_to(&mut self, found: &RecordedEvent) -> Result<(), VerifyError> {
        loop {
            if self.page.is_empty() && !self.exhausted {
                let next = self.log.read_all(self.after, PAGE).await?;
                self.exhausted = next.len() < PAGE;
                if let Some(last) = next.last() {
                    self.after = last.position;
                }
                self.page.extend(next);
            }
            let Some(event) = self.page.pop_front() else {
                return Ok(());
            };
            if event.event_id == found.event_id {
                return Ok(());
            }
            if event.metadata.district == found.metadata.district {
                self.found
                    .missing_from_file
                    .push((event.stream.to_string(), event.version));
            }
        }
    }

    /// What the check found.
    pub fn finish(self) -> ExportCheck {
        self.found
    }
}
