//! Who may see what: the read-side rules, beside the write-side ones.
//!
//! Reads are decided like commands, from the directory facts the event streams own (the
//! district's roles and the viewer's assignments), never from a read model: a viewer
//! whose role was just revoked sees nothing more the moment the caller was told the
//! revocation was recorded.
//!
//! - A participant sees the conversations they take part in. Staff take part in a
//!   school's conversations while they hold a role at that school (or district-wide):
//!   whoever leaves a school's roles leaves its conversations, no longer reading,
//!   writing or being sent them, though the log still names them among the
//!   participants ([`takes_part_at`]). Families and students take part for as long as
//!   they are participants.
//! - `school_inbox` at a school: that school's shared inbox (its school conversations).
//! - `oversight` at a school (or district-wide): every conversation of the school,
//!   personal ones included.
//! - `student_record` at one of a student's schools: the messages on the student's
//!   record from that school's conversations; `inbound_replies` there as well: the
//!   family's replies in them. A guardian with children at two schools has one inbox,
//!   but what another school wrote to them is on that school's child's record, not on
//!   this one's, and staff of this school do not read it there.
//! - The audit trail: `oversight` held district-wide (or a `system` service).
//! - A custom role holding only `personal_messages` grants none of these: such a user
//!   sees their own conversations and nothing else.
//! - `system` services (SIS sync, delivery workers, compliance tooling) see everything
//!   of their district but have no inbox of their own.

use crate::district::DistrictState;
use crate::ids::{PersonId, SchoolId};
use crate::permissions::Permission;
use crate::person::PersonState;
use crate::values::{ConversationKind, PersonKind};

/// Who is looking.
#[derive(Debug, Clone, Copy)]
pub enum Viewer<'a> {
    /// A `system` service of the district.
    System,
    /// A person, with their directory state (unregistered when unknown).
    Person {
        /// Their id.
        id: PersonId,
        /// What the directory knows of them.
        state: &'a PersonState,
    },
}

/// What the rules need to know of a conversation.
#[derive(Debug, Clone, Copy)]
pub struct ConversationFacts<'a> {
    /// Personal, school or group.
    pub kind: ConversationKind,
    /// The school it belongs to.
    pub school: SchoolId,
    /// Everyone taking part.
    pub participants: &'a [PersonId],
}

/// How much of the oversight view a viewer may search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OversightReach {
    /// Every school of the district.
    District,
    /// These schools (never empty).
    Schools(Vec<SchoolId>),
}

/// How much of a student's record a viewer may read: the record is made of the
/// conversations of the student's own schools, and a viewer reads those of the schools
/// where their roles reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordAccess {
    /// The student's schools where the viewer holds `student_record`: the staff messages
    /// of conversations at these schools are shown (never empty).
    pub schools: Vec<SchoolId>,
    /// Those of them where the viewer holds `inbound_replies` too: the family's replies
    /// in conversations at these schools are shown.
    pub inbound_schools: Vec<SchoolId>,
}

/// Whether `viewer` holds `permission` at `school` (or district-wide).
fn holds_at(
    district: &DistrictState,
    viewer: &PersonState,
    permission: Permission,
    school: SchoolId,
) -> bool {
    viewer.is_registered() && district.permissions_of(viewer, school).contains(permission)
}

/// Whether `person`, a participant, still takes part in a conversation of `school`:
/// family members and students do for as long as they are participants; staff while
/// they hold a role at the school or district-wide, since it is through their roles
/// that staff speak for a school. A principal whose roles were revoked keeps no reach
/// into the families' threads they once started.
pub fn takes_part_at(person: &PersonState, school: SchoolId) -> bool {
    !person.is_staff()
        || person
            .role_assignments()
            .iter()
            .any(|(_, at)| at.is_none_or(|s| s == school))
}

/// Where a person takes part in the conversations they are in ([`takes_part_at`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakingPart {
    /// In every school: a family member, a student, or staff with a district-wide role.
    Everywhere,
    /// In these schools only (empty for staff who hold no role at all).
    Schools(Vec<SchoolId>),
}

impl TakingPart {
    /// Whether a conversation of `school` is among them.
    pub fn includes(&self, school: SchoolId) -> bool {
        match self {
            TakingPart::Everywhere => true,
            TakingPart::Schools(schools) => schools.contains(&school),
        }
    }
}

/// Where `person` takes part in the conversations they are in ([`takes_part_at`]).
pub fn taking_part(person: &PersonState) -> TakingPart {
    if !person.is_staff() || person.role_assignments().iter().any(|(_, at)| at.is_none()) {
        return TakingPart::Everywhere;
    }
    let mut schools: Vec<SchoolId> = person
        .role_assignments()
        .iter()
        .filter_map(|(_, at)| *at)
        .collect();
    schools.sort_unstable();
    schools.dedup();
    TakingPart::Schools(schools)
}

/// Whether `viewer` may read `conversation`: its participants while they take part
/// ([`takes_part_at`]), the school inbox holders of its school (for school
/// conversations), and oversight at its school.
pub fn may_see_conversation(
    district: &DistrictState,
    viewer: Viewer<'_>,
    conversation: ConversationFacts<'_>,
) -> bool {
    let Viewer::Person { id, state } = viewer else {
        return true;
    };
    (conversation.participants.contains(&id) && takes_part_at(state, conversation.school))
        || (conversation.kind == ConversationKind::School
            && holds_at(
                district,
                state,
                Permission::SchoolInbox,
                conversation.school,
            ))
        || holds_at(district, state, Permission::Oversight, conversation.school)
}

/// Whether a viewer of a conversation may read every recipient's own copy of its
/// messages (their merge fields, their translation) and its delivery (channel, status),
/// as an export gives them: staff and services may; a family member or student sees only
/// the copies sent to them and their deliveries, in their thread and their export, so
/// one family never reads what was written to another ("Dear parent of Ralph") nor how
/// another was reached. `None` is a service.
pub fn sees_every_recipients_copy(viewer_kind: Option<PersonKind>) -> bool {
    matches!(viewer_kind, None | Some(PersonKind::Staff))
}

/// Whether a viewer sees which staff member wrote a message sent from the school's
/// shared identity ("From: School"): staff and services do (the school inbox, oversight,
/// records); to a family member or student it comes from the school, under the school's
/// name, as its text did, and the staff of a school conversation are not among its
/// participants for them (they talk with the school). `None` is a service.
pub fn sees_who_wrote_for_the_school(viewer_kind: Option<PersonKind>) -> bool {
    matches!(viewer_kind, None | Some(PersonKind::Staff))
}

/// The schools whose shared inbox `viewer` sees: where they hold `school_inbox`
/// (every school of the district when they hold it district-wide). Empty when none.
pub fn school_inboxes(district: &DistrictState, viewer: &PersonState) -> Vec<SchoolId> {
    schools_where(district, viewer, Permission::SchoolInbox)
}

fn schools_where(
    district: &DistrictState,
    viewer: &PersonState,
    permission: Permission,
) -> Vec<SchoolId> {
    if !viewer.is_registered() {
        return Vec::new();
    }
    district
        .schools()
        .map(|s| s.id)
        .filter(|school| holds_at(district, viewer, permission, *school))
        .collect()
}

/// How far `viewer` may search oversight: district-wide `oversight` (or a `system`
/// service) reaches every school, `oversight` at some schools reaches those; `None`
/// when they hold it nowhere.
pub fn oversight_reach(district: &DistrictState, viewer: Viewer<'_>) -> Option<OversightReach> {
    let Viewer::Person { state, .. } = viewer else {
        return Some(OversightReach::District);
    };
    if !state.is_registered() {
        return None;
    }
    if district
        .district_wide_permissions(state)
        .contains(Permission::Oversight)
    {
        return Some(OversightReach::District);
    }
    let schools = schools_where(district, state, Permission::Oversight);
    (!schools.is_empty()).then_some(OversightReach::Schools(schools))
}

/// What `viewer` may read of `student`'s record: `student_record` at one of the
/// student's schools (or district-wide) opens that school's part of it, `inbound_replies`
/// there adds the family's replies; `None` when the viewer holds `student_record` at
/// none of them. A `system` service reads all of it.
pub fn student_record_access(
    district: &DistrictState,
    viewer: Viewer<'_>,
    student: &PersonState,
) -> Option<RecordAccess> {
    let schools_holding = |permission| -> Vec<SchoolId> {
        student
            .school_ids()
            .iter()
            .copied()
            .filter(|school| match viewer {
                Viewer::System => true,
                Viewer::Person { state, .. } => holds_at(district, state, permission, *school),
            })
            .collect()
    };
    let schools = schools_holding(Permission::StudentRecord);
    if schools.is_empty() {
        return None;
    }
    let inbound_schools = schools_holding(Permission::InboundReplies)
        .into_iter()
        .filter(|school| schools.contains(school))
        .collect();
    Some(RecordAccess {
        schools,
        inbound_schools,
    })
}

/// Whether `viewer` may read the audit trail and verify its hash chains: a `system`
/// service, or `oversight` held district-wide.
pub fn may_read_audit(district: &DistrictState, viewer: Viewer<'_>) -> bool {
    match viewer {
        Viewer::System => true,
        Viewer::Person { state, .. } => {
            state.is_registered()
                && district
                    .district_wide_permissions(state)
                    .contains(Permission::Oversight)
        }
    }
}

#[cfg(test)]
mod tests;
