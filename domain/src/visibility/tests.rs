use super::*;
use crate::district;
use crate::events::{Event, RoleDefined};
use crate::permissions::{Permission, PermissionSet};
use crate::testing::*;
use crate::values::PersonKind;

fn fixture(id: PersonId) -> PersonState {
    people()
        .into_iter()
        .find(|p| p.id() == Some(id))
        .expect("a fixture person")
}

fn as_person(id: PersonId, state: &PersonState) -> Viewer<'_> {
    Viewer::Person { id, state }
}

/// The fixture district with a custom role `only_personal` granting just
/// `personal_messages`, `records` granting `student_record` alone and `inbox` granting
/// `school_inbox` alone.
fn district_with_custom_roles() -> DistrictState {
    let define = |id: &str, permissions: &[Permission]| -> Event {
        RoleDefined {
            role_id: role(id),
            name: id.to_owned(),
            permissions: permissions.iter().copied().collect::<PermissionSet>(),
            at: now(),
            by: sis(),
        }
        .into()
    };
    [
        define("only_personal", &[Permission::PersonalMessages]),
        define("records", &[Permission::StudentRecord]),
        define("inbox", &[Permission::SchoolInbox]),
    ]
    .iter()
    .fold(district(), district::evolve)
}

const CONVERSATION_PARTICIPANTS: &[PersonId] = &[TEACHER, GUARDIAN];

fn conversation(kind: ConversationKind) -> ConversationFacts<'static> {
    ConversationFacts {
        kind,
        school: SCHOOL,
        participants: CONVERSATION_PARTICIPANTS,
    }
}

#[test]
fn a_participant_sees_the_conversations_they_take_part_in() {
    let d = district();
    let guardian = fixture(GUARDIAN);
    assert!(may_see_conversation(
        &d,
        as_person(GUARDIAN, &guardian),
        conversation(ConversationKind::Group)
    ));
}

#[test]
fn staff_without_a_role_at_the_school_do_not_see_others_conversations() {
    let d = district();
    let colleague = fixture(COLLEAGUE);
    assert!(!may_see_conversation(
        &d,
        as_person(COLLEAGUE, &colleague),
        conversation(ConversationKind::Personal)
    ));
}

#[test]
fn oversight_at_the_school_sees_every_conversation_personal_ones_included() {
    let d = district();
    let admin = fixture(ADMIN);
    for kind in [
        ConversationKind::Personal,
        ConversationKind::School,
        ConversationKind::Group,
    ] {
        assert!(may_see_conversation(
            &d,
            as_person(ADMIN, &admin),
            conversation(kind)
        ));
    }
    let other_admin = fixture(OTHER_ADMIN);
    assert!(
        !may_see_conversation(
            &d,
            as_person(OTHER_ADMIN, &other_admin),
            conversation(ConversationKind::Personal)
        ),
        "oversight at another school reaches nothing here"
    );
}

#[test]
fn school_inbox_holders_see_the_school_conversations_of_their_school_only() {
    let d = district_with_custom_roles();
    let inbox_only = person(NO_ROLE, PersonKind::Staff, "Ines Inbox")
        .at(SCHOOL)
        .role("inbox", Some(SCHOOL))
        .build();
    let viewer = as_person(NO_ROLE, &inbox_only);
    assert!(may_see_conversation(
        &d,
        viewer,
        conversation(ConversationKind::School)
    ));
    assert!(!may_see_conversation(
        &d,
        viewer,
        conversation(ConversationKind::Personal)
    ));
    let elsewhere = ConversationFacts {
        school: OTHER_SCHOOL,
        ..conversation(ConversationKind::School)
    };
    assert!(!may_see_conversation(&d, viewer, elsewhere));
    assert_eq!(school_inboxes(&d, &inbox_only), vec![SCHOOL]);
    assert!(school_inboxes(&d, &fixture(TEACHER)).is_empty());
}

#[test]
fn a_role_with_only_personal_messages_sees_nothing_but_its_own_conversations() {
    let d = district_with_custom_roles();
    let nurse = person(NO_ROLE, PersonKind::Staff, "Nina Nurse")
        .at(SCHOOL)
        .role("only_personal", Some(SCHOOL))
        .build();
    let viewer = as_person(NO_ROLE, &nurse);
    for kind in [
        ConversationKind::Personal,
        ConversationKind::School,
        ConversationKind::Group,
    ] {
        assert!(!may_see_conversation(&d, viewer, conversation(kind)));
    }
    assert!(school_inboxes(&d, &nurse).is_empty());
    assert_eq!(oversight_reach(&d, viewer), None);
    assert_eq!(
        student_record_access(&d, viewer, &fixture(STUDENT_14)),
        None
    );
    assert!(!may_read_audit(&d, viewer));
    let own = ConversationFacts {
        kind: ConversationKind::Personal,
        school: SCHOOL,
        participants: &[NO_ROLE, GUARDIAN],
    };
    assert!(may_see_conversation(&d, viewer, own));
}

#[test]
fn oversight_reaches_the_district_when_held_district_wide_else_its_schools() {
    let d = district();
    let district_admin = fixture(DISTRICT_ADMIN);
    assert_eq!(
        oversight_reach(&d, as_person(DISTRICT_ADMIN, &district_admin)),
        Some(OversightReach::District)
    );
    let admin = fixture(ADMIN);
    assert_eq!(
        oversight_reach(&d, as_person(ADMIN, &admin)),
        Some(OversightReach::Schools(vec![SCHOOL]))
    );
    let teacher = fixture(TEACHER);
    assert_eq!(oversight_reach(&d, as_person(TEACHER, &teacher)), None);
    assert_eq!(
        oversight_reach(&d, Viewer::System),
        Some(OversightReach::District)
    );
}

#[test]
fn the_student_record_needs_student_record_and_inbound_replies_need_their_own_permission() {
    let d = district_with_custom_roles();
    let student = fixture(STUDENT_14);
    let admin = fixture(ADMIN);
    assert_eq!(
        student_record_access(&d, as_person(ADMIN, &admin), &student),
        Some(RecordAccess {
            schools: vec![SCHOOL],
            inbound_schools: vec![SCHOOL],
        })
    );
    let clerk = person(NO_ROLE, PersonKind::Staff, "Cleo Clerk")
        .at(SCHOOL)
        .role("records", Some(SCHOOL))
        .build();
    assert_eq!(
        student_record_access(&d, as_person(NO_ROLE, &clerk), &student),
        Some(RecordAccess {
            schools: vec![SCHOOL],
            inbound_schools: vec![],
        })
    );
    let other_admin = fixture(OTHER_ADMIN);
    assert_eq!(
        student_record_access(&d, as_person(OTHER_ADMIN, &other_admin), &student),
        None,
        "a role at another school does not open this student's record"
    );
}

#[test]
fn a_student_record_opens_only_the_parts_of_the_schools_where_the_viewer_holds_it() {
    let d = district_with_custom_roles();
    let student = person(STUDENT_14, PersonKind::Student, "Sam at both")
        .at(SCHOOL)
        .at(OTHER_SCHOOL)
        .build();
    let other_admin = fixture(OTHER_ADMIN);
    assert_eq!(
        student_record_access(&d, as_person(OTHER_ADMIN, &other_admin), &student),
        Some(RecordAccess {
            schools: vec![OTHER_SCHOOL],
            inbound_schools: vec![OTHER_SCHOOL],
        }),
        "an admin of one of the student's schools reads that school's part only"
    );
    let district_admin = fixture(DISTRICT_ADMIN);
    assert_eq!(
        student_record_access(&d, as_person(DISTRICT_ADMIN, &district_admin), &student),
        Some(RecordAccess {
            schools: vec![SCHOOL, OTHER_SCHOOL],
            inbound_schools: vec![SCHOOL, OTHER_SCHOOL],
        })
    );
    assert_eq!(
        student_record_access(&d, Viewer::System, &student),
        Some(RecordAccess {
            schools: vec![SCHOOL, OTHER_SCHOOL],
            inbound_schools: vec![SCHOOL, OTHER_SCHOOL],
        })
    );
}

#[test]
fn the_audit_trail_needs_oversight_district_wide() {
    let d = district();
    let district_admin = fixture(DISTRICT_ADMIN);
    let admin = fixture(ADMIN);
    assert!(may_read_audit(
        &d,
        as_person(DISTRICT_ADMIN, &district_admin)
    ));
    assert!(!may_read_audit(&d, as_person(ADMIN, &admin)));
    assert!(may_read_audit(&d, Viewer::System));
}

#[test]
fn an_unknown_viewer_sees_only_what_they_take_part_in() {
    let d = district();
    let unknown = PersonState::default();
    let viewer = as_person(NO_ROLE, &unknown);
    assert!(!may_see_conversation(
        &d,
        viewer,
        conversation(ConversationKind::School)
    ));
    assert_eq!(oversight_reach(&d, viewer), None);
    assert!(!may_read_audit(&d, viewer));
}

#[test]
fn a_staff_participant_whose_roles_at_the_school_are_gone_sees_the_conversation_no_more() {
    let d = district();
    let gone = fixture(NO_ROLE);
    let facts = ConversationFacts {
        kind: ConversationKind::Group,
        school: SCHOOL,
        participants: &[NO_ROLE, GUARDIAN],
    };
    assert!(!may_see_conversation(&d, as_person(NO_ROLE, &gone), facts));
    let guardian = fixture(GUARDIAN);
    assert!(may_see_conversation(
        &d,
        as_person(GUARDIAN, &guardian),
        facts
    ));
    let teacher = fixture(TEACHER);
    assert_eq!(taking_part(&teacher), TakingPart::Schools(vec![SCHOOL]));
    assert_eq!(taking_part(&gone), TakingPart::Schools(vec![]));
    assert_eq!(
        taking_part(&fixture(DISTRICT_ADMIN)),
        TakingPart::Everywhere
    );
    assert_eq!(taking_part(&guardian), TakingPart::Everywhere);
}
