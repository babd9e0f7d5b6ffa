use super::*;
use crate::facts::Actor;
use crate::ids::PersonId;
use crate::testing::*;
use crate::DomainError;

const NEW: PersonId = PersonId::new(uuid::Uuid::from_u128(0x9001));

fn register(kind: PersonKind, schools: Vec<SchoolId>) -> RegisterPerson {
    RegisterPerson {
        person_id: NEW,
        kind,
        name: " Lee Learner ".to_owned(),
        school_ids: schools,
        birth_date: Some(date(2011, 2, 3)),
        manually_added: None,
        language: None,
        preferred_channel: None,
        contact_points: None,
    }
}

fn registered_event(kind: PersonKind, schools: Vec<SchoolId>) -> PersonRegistered {
    PersonRegistered {
        person_id: NEW,
        kind,
        name: "Lee Learner".to_owned(),
        school_ids: schools,
        birth_date: Some(date(2011, 2, 3)),
        manually_added: false,
        language: "en".to_owned(),
        preferred_channel: None,
        contact_points: vec![],
        at: now(),
        by: sis(),
    }
}

fn stream(builder: PersonBuilder) -> Vec<Event> {
    builder.events()
}

#[test]
fn a_system_service_registers_a_person_with_defaults() {
    given([])
        .acting_as_system()
        .when(register(PersonKind::Student, vec![SCHOOL, SCHOOL]))
        .then([registered_event(PersonKind::Student, vec![SCHOOL]).into()]);
}

#[test]
fn contact_points_are_normalised_and_checked() {
    let mut cmd = register(PersonKind::Guardian, vec![]);
    cmd.contact_points = Some(vec![
        ContactPoint {
            channel: ContactChannel::Sms,
            address: "+1 (555) 010-0009".to_owned(),
        },
        ContactPoint {
            channel: ContactChannel::Email,
            address: " lee@example.org ".to_owned(),
        },
    ]);
    cmd.language = Some("es-MX".to_owned());
    cmd.preferred_channel = Some(Channel::Email);
    let events = given([]).acting_as_system().when(cmd.clone()).events();
    let Event::PersonRegistered(e) = &events[0] else {
        panic!("expected PersonRegistered, got {events:?}");
    };
    assert_eq!(e.contact_points[0].address, "+15550100009");
    assert_eq!(e.contact_points[1].address, "lee@example.org");
    assert_eq!(e.language, "es-MX");
    assert_eq!(e.preferred_channel, Some(Channel::Email));

    cmd.contact_points = Some(vec![ContactPoint {
        channel: ContactChannel::Sms,
        address: "call me".to_owned(),
    }]);
    given([])
        .acting_as_system()
        .when(cmd)
        .then_code("validation");
}

#[test]
fn a_person_is_registered_only_at_registered_schools() {
    let unknown = SchoolId::new(uuid::Uuid::from_u128(0x5c99));
    given([])
        .acting_as_system()
        .when(register(PersonKind::Staff, vec![unknown]))
        .then_err(PersonError::UnknownSchool { school_id: unknown });
}

#[test]
fn a_birth_date_in_the_future_is_refused() {
    let mut cmd = register(PersonKind::Student, vec![SCHOOL]);
    cmd.birth_date = Some(date(2030, 1, 1));
    given([])
        .acting_as_system()
        .when(cmd)
        .then_err(ValidationError::BirthDateInFuture);
}

#[test]
fn directory_commands_need_a_system_service_or_roles_admin_at_the_school() {
    given([])
        .acting_as(TECH_ADMIN)
        .when(register(PersonKind::Student, vec![SCHOOL]))
        .then([PersonRegistered {
            by: Actor::Person(TECH_ADMIN),
            ..registered_event(PersonKind::Student, vec![SCHOOL])
        }
        .into()]);
    given([])
        .acting_as(TECH_ADMIN)
        .when(register(PersonKind::Student, vec![SCHOOL, OTHER_SCHOOL]))
        .then_err(PersonError::NotPermitted);
    given([])
        .acting_as(TECH_ADMIN)
        .when(register(PersonKind::Staff, vec![]))
        .then_err(PersonError::NotPermitted);
    given([])
        .acting_as(ADMIN)
        .when(register(PersonKind::Student, vec![SCHOOL]))
        .then_err(PersonError::NotPermitted);
    given([])
        .acting_as(GUARDIAN)
        .when(register(PersonKind::Student, vec![SCHOOL]))
        .then_err(PersonError::NotPermitted);
}

#[test]
fn registering_again_with_the_same_details_is_a_no_op_other_details_are_refused() {
    let past = [registered_event(PersonKind::Student, vec![SCHOOL]).into()];
    given(past.clone())
        .acting_as_system()
        .when(register(PersonKind::Student, vec![SCHOOL]))
        .then_nothing();
    given(past.clone())
        .acting_as_system()
        .when(register(PersonKind::Guardian, vec![SCHOOL]))
        .then_err(PersonError::AlreadyRegistered { person_id: NEW });
}

#[test]
fn registering_again_with_another_phone_or_language_is_refused_not_ignored() {
    let phone = |address: &str| ContactPoint {
        channel: ContactChannel::Sms,
        address: address.to_owned(),
    };
    let past = [PersonRegistered {
        language: "es".to_owned(),
        contact_points: vec![phone("+15550001111")],
        ..registered_event(PersonKind::Student, vec![SCHOOL])
    }
    .into()];
    let again = |language: Option<&str>, points: Option<Vec<ContactPoint>>| RegisterPerson {
        language: language.map(str::to_owned),
        contact_points: points,
        ..register(PersonKind::Student, vec![SCHOOL])
    };
    // The same details, or leaving them out, is nothing new.
    for same in [
        again(Some("es"), Some(vec![phone("+1 (555) 000-1111")])),
        again(None, None),
        again(Some("ES"), None),
        RegisterPerson {
            manually_added: Some(false),
            ..again(None, None)
        },
    ] {
        given(past.clone())
            .acting_as_system()
            .when(same)
            .then_nothing();
    }
    // A sync that believes it changed them learns that it did not.
    for other in [
        again(None, Some(vec![phone("+15558888888")])),
        again(None, Some(vec![])),
        again(Some("en"), None),
        RegisterPerson {
            preferred_channel: Some(Channel::Email),
            ..again(None, None)
        },
        RegisterPerson {
            manually_added: Some(true),
            ..again(None, None)
        },
    ] {
        given(past.clone())
            .acting_as_system()
            .when(other)
            .then_err(PersonError::AlreadyRegistered { person_id: NEW });
    }
}

#[test]
fn a_name_with_a_line_break_or_a_nul_is_refused() {
    for name in ["Staff\r\nBcc: evil@x.com", "nul\0name"] {
        given([])
            .acting_as_system()
            .when(RegisterPerson {
                name: name.to_owned(),
                ..register(PersonKind::Staff, vec![SCHOOL])
            })
            .then_code("validation");
    }
}

#[test]
fn a_guardian_is_linked_to_a_student_on_the_guardians_stream() {
    let guardian = stream(person(NEW, PersonKind::Guardian, "G"));
    let link = LinkGuardian {
        guardian_id: NEW,
        student_id: STUDENT_14,
    };
    let linked: Event = GuardianLinked {
        guardian_id: NEW,
        student_id: STUDENT_14,
        at: now(),
        by: sis(),
    }
    .into();
    given(guardian.clone())
        .acting_as_system()
        .when(link.clone())
        .then([linked.clone()]);
    let mut twice = guardian;
    twice.push(linked);
    given(twice).acting_as_system().when(link).then_nothing();
}

#[test]
fn a_guardians_link_ends_after_a_custody_change_and_ending_it_twice_is_nothing() {
    let linked: Event = GuardianLinked {
        guardian_id: NEW,
        student_id: STUDENT_14,
        at: now(),
        by: sis(),
    }
    .into();
    let mut past = stream(person(NEW, PersonKind::Guardian, "G"));
    past.push(linked.clone());
    let unlink = UnlinkGuardian {
        guardian_id: NEW,
        student_id: STUDENT_14,
    };
    let unlinked: Event = GuardianUnlinked {
        guardian_id: NEW,
        student_id: STUDENT_14,
        at: now(),
        by: sis(),
    }
    .into();
    given(past.clone())
        .acting_as_system()
        .when(unlink.clone())
        .then([unlinked.clone()]);
    past.push(unlinked);
    let state = past.iter().fold(PersonState::default(), evolve);
    assert!(
        state.linked_students().is_empty(),
        "no longer reached through Dennis"
    );
    assert!(state.family_students().is_empty());
    given(past.clone())
        .acting_as_system()
        .when(unlink)
        .then_nothing();
    // Linked again later, they are again.
    past.push(linked);
    let state = past.iter().fold(PersonState::default(), evolve);
    assert_eq!(state.linked_students(), &[STUDENT_14]);
    // Staff without roles_admin at the student's school may not.
    given(stream(person(NEW, PersonKind::Guardian, "G")))
        .acting_as(TEACHER)
        .when(UnlinkGuardian {
            guardian_id: NEW,
            student_id: STUDENT_14,
        })
        .then_err(PersonError::NotPermitted);
}

#[test]
fn only_a_guardian_is_linked_and_only_to_a_known_student() {
    given(stream(person(NEW, PersonKind::Guardian, "G")))
        .acting_as_system()
        .when(LinkGuardian {
            guardian_id: NEW,
            student_id: TEACHER,
        })
        .then_err(ValidationError::WrongKind {
            person_id: TEACHER,
            expected: PersonKind::Student,
        });
    given(stream(person(NEW, PersonKind::Staff, "S")))
        .acting_as_system()
        .when(LinkGuardian {
            guardian_id: NEW,
            student_id: STUDENT_14,
        })
        .then_err(ValidationError::WrongKind {
            person_id: NEW,
            expected: PersonKind::Guardian,
        });
    given(stream(person(NEW, PersonKind::Guardian, "G")))
        .acting_as_system()
        .without_person(STUDENT_14)
        .when(LinkGuardian {
            guardian_id: NEW,
            student_id: STUDENT_14,
        })
        .then_err(PersonError::UnknownPerson {
            person_id: STUDENT_14,
        });
    given([])
        .acting_as_system()
        .when(LinkGuardian {
            guardian_id: NEW,
            student_id: STUDENT_14,
        })
        .then_err(PersonError::UnknownPerson { person_id: NEW });
}

#[test]
fn a_students_current_teachers_must_be_staff() {
    let student = stream(person(NEW, PersonKind::Student, "S").at(SCHOOL));
    given(student.clone())
        .acting_as_system()
        .when(SetStudentTeachers {
            student_id: NEW,
            teacher_ids: vec![TEACHER, GUARDIAN],
        })
        .then_err(ValidationError::WrongKind {
            person_id: GUARDIAN,
            expected: PersonKind::Staff,
        });
    given(student)
        .acting_as(TECH_ADMIN)
        .when(SetStudentTeachers {
            student_id: NEW,
            teacher_ids: vec![TEACHER, TEACHER, COLLEAGUE],
        })
        .then([StudentTeachersSet {
            student_id: NEW,
            teacher_ids: vec![TEACHER, COLLEAGUE],
            at: now(),
            by: Actor::Person(TECH_ADMIN),
        }
        .into()]);
}

#[test]
fn setting_the_same_teachers_again_is_a_no_op() {
    given(stream(
        person(NEW, PersonKind::Student, "S").taught_by(&[TEACHER]),
    ))
    .acting_as_system()
    .when(SetStudentTeachers {
        student_id: NEW,
        teacher_ids: vec![TEACHER],
    })
    .then_nothing();
}

fn assign(role_id: &str, school_id: Option<SchoolId>) -> AssignRole {
    AssignRole {
        person_id: NEW,
        role_id: role(role_id),
        school_id,
    }
}

fn staff() -> Vec<Event> {
    stream(person(NEW, PersonKind::Staff, "S").at(SCHOOL))
}

#[test]
fn a_builtin_role_is_assigned_at_a_school_or_district_wide() {
    given(staff())
        .acting_as_system()
        .when(assign("school_admin", Some(SCHOOL)))
        .then([RoleAssigned {
            person_id: NEW,
            role_id: role("school_admin"),
            school_id: Some(SCHOOL),
            at: now(),
            by: sis(),
        }
        .into()]);
    given(staff())
        .acting_as(DISTRICT_ADMIN)
        .when(assign("district_admin", None))
        .events();
}

#[test]
fn a_role_must_be_builtin_or_defined_by_the_district() {
    given(staff())
        .acting_as_system()
        .when(assign("coach", Some(SCHOOL)))
        .then_err(PersonError::UnknownRole {
            role_id: role("coach"),
        });
    let coach = crate::events::RoleDefined {
        role_id: role("coach"),
        name: "Coach".to_owned(),
        permissions: crate::permissions::PermissionSet::empty(),
        at: now(),
        by: sis(),
    };
    given(staff())
        .acting_as_system()
        .district([coach.into()])
        .when(assign("coach", Some(SCHOOL)))
        .events();
}

#[test]
fn a_role_is_assigned_only_at_a_registered_school_and_only_to_staff() {
    let unknown = SchoolId::new(uuid::Uuid::from_u128(0x5c99));
    given(staff())
        .acting_as_system()
        .when(assign("teacher", Some(unknown)))
        .then_err(PersonError::UnknownSchool { school_id: unknown });
    given(stream(person(NEW, PersonKind::Guardian, "G")))
        .acting_as_system()
        .when(assign("teacher", Some(SCHOOL)))
        .then_err(ValidationError::WrongKind {
            person_id: NEW,
            expected: PersonKind::Staff,
        });
}

#[test]
fn a_school_roles_admin_assigns_roles_only_at_their_school() {
    given(staff())
        .acting_as(TECH_ADMIN)
        .when(assign("teacher", Some(SCHOOL)))
        .events();
    given(staff())
        .acting_as(TECH_ADMIN)
        .when(assign("teacher", Some(OTHER_SCHOOL)))
        .then_err(PersonError::NotPermitted);
    given(staff())
        .acting_as(TECH_ADMIN)
        .when(assign("teacher", None))
        .then_err(PersonError::NotPermitted);
}

#[test]
fn a_roles_admin_hands_out_no_more_than_they_hold_themself() {
    // A Technical School Admin (roles_admin, personal messages off) may assign roles
    // within what they hold, but not make anyone, themself included, a School Admin.
    given(staff())
        .acting_as(TECH_ADMIN)
        .when(assign("technical_school_admin", Some(SCHOOL)))
        .events();
    given(staff())
        .acting_as(TECH_ADMIN)
        .when(assign("school_admin", Some(SCHOOL)))
        .then_err(PersonError::BeyondOwnPermissions {
            role_id: role("school_admin"),
            permission: crate::permissions::Permission::PersonalMessages,
        });
    given(staff())
        .acting_as(TECH_ADMIN)
        .when(assign("district_admin", Some(SCHOOL)))
        .then_code("not_permitted");
    // Nor take one back: the principal's role is not theirs to revoke.
    given(stream(
        person(NEW, PersonKind::Staff, "S")
            .at(SCHOOL)
            .role("school_admin", Some(SCHOOL)),
    ))
    .acting_as(TECH_ADMIN)
    .when(RevokeRole {
        person_id: NEW,
        role_id: role("school_admin"),
        school_id: Some(SCHOOL),
    })
    .then_code("not_permitted");
    // Someone who holds everything (a district admin) and the SIS sync are not limited.
    given(staff())
        .acting_as(DISTRICT_ADMIN)
        .when(assign("school_admin", Some(SCHOOL)))
        .events();
}

#[test]
fn assigning_a_role_twice_or_revoking_one_not_held_is_a_no_op() {
    let with_role = stream(person(NEW, PersonKind::Staff, "S").role("teacher", Some(SCHOOL)));
    given(with_role.clone())
        .acting_as_system()
        .when(assign("teacher", Some(SCHOOL)))
        .then_nothing();
    given(with_role.clone())
        .acting_as_system()
        .when(RevokeRole {
            person_id: NEW,
            role_id: role("teacher"),
            school_id: None,
        })
        .then_nothing();
    given(with_role)
        .acting_as_system()
        .when(RevokeRole {
            person_id: NEW,
            role_id: role("teacher"),
            school_id: Some(SCHOOL),
        })
        .then([RoleRevoked {
            person_id: NEW,
            role_id: role("teacher"),
            school_id: Some(SCHOOL),
            at: now(),
            by: sis(),
        }
        .into()]);
}

#[test]
fn revoking_a_role_that_does_not_exist_is_refused_not_a_no_op() {
    let with_role = stream(person(NEW, PersonKind::Staff, "S").role("teacher", Some(SCHOOL)));
    given(with_role)
        .acting_as_system()
        .when(RevokeRole {
            person_id: NEW,
            role_id: role("teachr"),
            school_id: Some(SCHOOL),
        })
        .then_code("unknown_role");
}

#[test]
fn a_revoked_role_no_longer_counts() {
    let events = stream(person(NEW, PersonKind::Staff, "S").role("teacher", Some(SCHOOL)));
    let revoked: Event = RoleRevoked {
        person_id: NEW,
        role_id: role("teacher"),
        school_id: Some(SCHOOL),
        at: now(),
        by: sis(),
    }
    .into();
    let state = events
        .iter()
        .chain([&revoked])
        .fold(PersonState::default(), evolve);
    assert!(state.role_assignments().is_empty());
}

#[test]
fn contact_preferences_change_only_what_is_given() {
    let guardian = stream(person(NEW, PersonKind::Guardian, "G").prefers(Channel::Sms));
    given(guardian.clone())
        .acting_as_system()
        .when(SetContactPreferences {
            person_id: NEW,
            preferred_channel: None,
            language: Some("fr".to_owned()),
            contact_points: None,
        })
        .then([ContactPreferencesSet {
            person_id: NEW,
            preferred_channel: Some(Channel::Sms),
            language: "fr".to_owned(),
            at: now(),
            by: sis(),
        }
        .into()]);
    given(guardian.clone())
        .acting_as_system()
        .when(SetContactPreferences {
            person_id: NEW,
            preferred_channel: Some(Channel::Sms),
            language: Some("en".to_owned()),
            contact_points: None,
        })
        .then_nothing();
    given(guardian)
        .acting_as_system()
        .when(SetContactPreferences {
            person_id: NEW,
            preferred_channel: None,
            language: Some("??".to_owned()),
            contact_points: None,
        })
        .then_code("validation");
}

fn with_contacts() -> Vec<Event> {
    stream(
        person(NEW, PersonKind::Guardian, "G")
            .contact(ContactChannel::Sms, "+15550100009")
            .contact(ContactChannel::Email, "lee@example.org"),
    )
}

#[test]
fn a_family_that_changed_phones_gets_its_new_number_and_keeps_the_failing_mark_of_the_old() {
    let point = |channel, address: &str| ContactPoint {
        channel,
        address: address.to_owned(),
    };
    let change = |points: Vec<ContactPoint>| SetContactPreferences {
        person_id: NEW,
        preferred_channel: None,
        language: None,
        contact_points: Some(points),
    };
    let mut past = with_contacts();
    past.push(
        ContactPointFailing {
            person_id: NEW,
            address: "lee@example.org".to_owned(),
            delivery_id: crate::DeliveryId::new(uuid::Uuid::from_u128(1)),
            at: now(),
        }
        .into(),
    );
    let events = given(past.clone())
        .acting_as_system()
        .when(change(vec![
            point(ContactChannel::Sms, "+1 555 010 0077"),
            point(ContactChannel::Email, "lee@example.org"),
        ]))
        .events();
    assert_eq!(
        events,
        vec![ContactPointsChanged {
            person_id: NEW,
            contact_points: vec![
                point(ContactChannel::Sms, "+15550100077"),
                point(ContactChannel::Email, "lee@example.org"),
            ],
            at: now(),
            by: sis(),
        }
        .into()]
    );
    let state = past
        .iter()
        .chain(&events)
        .fold(PersonState::default(), evolve);
    let held: Vec<(&str, bool)> = state
        .contact_points()
        .iter()
        .map(|cp| (cp.address.as_str(), cp.failing))
        .collect();
    assert_eq!(
        held,
        vec![("+15550100077", false), ("lee@example.org", true)],
        "the bounced address stays failing until it is reset"
    );
    // The same addresses in another order (an email in other case) are nothing new; a
    // bad one records nothing.
    given(past.clone())
        .acting_as_system()
        .when(change(vec![
            point(ContactChannel::Email, "Lee@Example.org"),
            point(ContactChannel::Sms, "+15550100009"),
        ]))
        .then_nothing();
    given(past)
        .acting_as_system()
        .when(change(vec![point(ContactChannel::Sms, "not a number")]))
        .then_code("validation");
}

#[test]
fn resetting_an_unknown_contact_point_is_refused() {
    given(with_contacts())
        .acting_as_system()
        .when(ResetContactPoint {
            person_id: NEW,
            address: "+15550199999".to_owned(),
        })
        .then_err(ValidationError::UnknownAddress {
            address: "+15550199999".to_owned(),
        });
}

#[test]
fn resetting_a_contact_point_that_is_not_failing_is_a_no_op() {
    given(with_contacts())
        .acting_as_system()
        .when(ResetContactPoint {
            person_id: NEW,
            address: "+1 555 010 0009".to_owned(),
        })
        .then_nothing();
}

#[test]
fn resetting_a_failing_contact_point_makes_it_usable_again() {
    let failing = with_contacts()
        .iter()
        .fold(PersonState::default(), evolve)
        .mark_failing("lee@example.org");
    let facts = facts();
    let cmd = Command::ResetContactPoint(ResetContactPoint {
        person_id: NEW,
        address: "LEE@example.org".to_owned(),
    });
    let mut facts = facts;
    facts.actor = sis();
    let events = decide(&failing, &cmd, &facts).unwrap();
    assert_eq!(
        events,
        vec![ContactPointReset {
            person_id: NEW,
            address: "lee@example.org".to_owned(),
            at: now(),
            by: sis(),
        }
        .into()]
    );
    let reset = events.iter().fold(failing, evolve);
    assert!(reset.contact_points().iter().all(|cp| !cp.failing));
}

#[test]
fn age_counts_whole_years_and_the_birthday_itself() {
    let student = person(NEW, PersonKind::Student, "S")
        .born(date(2012, 3, 10))
        .build();
    assert_eq!(student.age_on(date(2025, 3, 9)), Some(12));
    assert_eq!(student.age_on(date(2025, 3, 10)), Some(13));
    assert_eq!(
        person(NEW, PersonKind::Student, "S")
            .build()
            .age_on(date(2025, 1, 1)),
        None
    );
}

#[test]
fn a_guardians_related_people_are_their_students() {
    let guardian = person(NEW, PersonKind::Guardian, "G")
        .guardian_of(STUDENT_14)
        .guardian_of(STUDENT_12)
        .build();
    assert_eq!(guardian.related_people(), vec![STUDENT_14, STUDENT_12]);
    assert!(person(NEW, PersonKind::Staff, "S")
        .build()
        .related_people()
        .is_empty());
}

#[test]
fn person_commands_go_to_person_streams_only() {
    let mut facts = facts();
    facts.actor = sis();
    let err = decide(
        &PersonState::default(),
        &Command::StopConversation(crate::commands::StopConversation {
            conversation_id: crate::ids::ConversationId::new(uuid::Uuid::nil()),
        }),
        &facts,
    );
    assert_eq!(
        err.map_err(|e| DomainError::from(e).code()),
        Err("validation")
    );
}

fn mark_failing(address: &str) -> MarkContactPointFailing {
    MarkContactPointFailing {
        person_id: NEW,
        address: address.to_owned(),
        delivery_id: crate::ids::DeliveryId::new(uuid::Uuid::from_u128(0xd1)),
    }
}

#[test]
fn a_permanent_failure_marks_the_contact_point_failing_until_it_is_reset() {
    let events = given(with_contacts())
        .acting_as_system()
        .when(mark_failing("LEE@example.org"))
        .events();
    assert_eq!(
        events,
        vec![ContactPointFailing {
            person_id: NEW,
            address: "lee@example.org".to_owned(),
            delivery_id: crate::ids::DeliveryId::new(uuid::Uuid::from_u128(0xd1)),
            at: now(),
        }
        .into()]
    );
    let state = with_contacts()
        .iter()
        .chain(&events)
        .fold(PersonState::default(), evolve);
    assert!(state
        .contact_points()
        .iter()
        .any(|cp| cp.address == "lee@example.org" && cp.failing));
    let again: Vec<Event> = with_contacts().into_iter().chain(events).collect();
    given(again)
        .acting_as_system()
        .when(mark_failing("lee@example.org"))
        .then_nothing();
}

#[test]
fn only_homeroom_services_mark_contact_points_failing() {
    given(with_contacts())
        .acting_as(DISTRICT_ADMIN)
        .when(mark_failing("lee@example.org"))
        .then_err(PersonError::NotPermitted);
    given(with_contacts())
        .acting_as_system()
        .when(mark_failing("someone-else@example.org"))
        .then_nothing();
}
