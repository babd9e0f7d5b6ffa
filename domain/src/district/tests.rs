use super::*;
use crate::facts::Actor;
use crate::permissions::Permission;
use crate::testing::*;
use crate::values::PersonKind;

fn register_school(name: &str, sms_number: Option<&str>) -> RegisterSchool {
    RegisterSchool {
        school_id: SCHOOL,
        name: name.to_owned(),
        sms_number: sms_number.map(str::to_owned),
    }
}

fn no_change() -> ChangeDistrictSettings {
    ChangeDistrictSettings {
        students_in_conversations: None,
        max_participants: None,
        default_channel: None,
        blocked_patterns: None,
    }
}

#[test]
fn a_system_service_registers_a_school() {
    given([])
        .acting_as_system()
        .when(register_school(" Hillside ", Some("+1 555 000 1000")))
        .then([SchoolRegistered {
            school_id: SCHOOL,
            name: "Hillside".to_owned(),
            sms_number: Some(PhoneNumber::parse("+15550001000").unwrap()),
            at: now(),
            by: sis(),
        }
        .into()]);
}

#[test]
fn a_district_wide_roles_admin_may_run_district_commands() {
    let events = given([])
        .acting_as(DISTRICT_ADMIN)
        .when(register_school("Hillside", None))
        .events();
    assert_eq!(events.len(), 1);
}

#[test]
fn district_commands_need_roles_admin_district_wide() {
    given([])
        .acting_as(TECH_ADMIN)
        .when(register_school("Hillside", None))
        .then_err(DistrictError::NotPermitted);
    given([])
        .acting_as(ADMIN)
        .when(no_change())
        .then_err(DistrictError::NotPermitted);
}

#[test]
fn registering_the_same_school_again_is_a_no_op_but_other_details_are_refused() {
    given(district_events())
        .acting_as_system()
        .when(register_school("Hillside", Some("+15550001000")))
        .then_nothing();
    given(district_events())
        .acting_as_system()
        .when(register_school("Hilltop", Some("+15550001000")))
        .then_err(DistrictError::SchoolAlreadyRegistered { school_id: SCHOOL });
}

#[test]
fn a_school_number_must_be_a_phone_number_not_already_in_use() {
    given([])
        .acting_as_system()
        .when(register_school("Hillside", Some("555-1000")))
        .then_code("validation");
    let taken = RegisterSchool {
        school_id: SchoolId::new(uuid::Uuid::from_u128(0x5c09)),
        name: "Lakeside".to_owned(),
        sms_number: Some("+15550002000".to_owned()),
    };
    given(district_events())
        .acting_as_system()
        .when(taken)
        .then_err(ValidationError::NumberInUse {
            number: "+15550002000".to_owned(),
        });
}

#[test]
fn custom_roles_may_not_reuse_a_builtin_id() {
    given([])
        .acting_as_system()
        .when(DefineRole {
            role_id: role("teacher"),
            name: "Teacher".to_owned(),
            permissions: PermissionSet::all(),
        })
        .then_err(DistrictError::BuiltinRoleId {
            role_id: role("teacher"),
        });
}

#[test]
fn a_custom_role_may_hold_any_subset_and_be_redefined() {
    let only_personal: PermissionSet = [Permission::PersonalMessages].into_iter().collect();
    let define = |permissions| DefineRole {
        role_id: role("coach"),
        name: "Coach".to_owned(),
        permissions,
    };
    let defined: Event = RoleDefined {
        role_id: role("coach"),
        name: "Coach".to_owned(),
        permissions: only_personal,
        at: now(),
        by: sis(),
    }
    .into();
    given([])
        .acting_as_system()
        .when(define(only_personal))
        .then([defined.clone()]);
    given([defined.clone()])
        .acting_as_system()
        .when(define(only_personal))
        .then_nothing();
    let events = given([defined])
        .acting_as_system()
        .when(define(PermissionSet::empty()))
        .events();
    assert!(matches!(&events[..], [Event::RoleDefined(e)] if e.permissions.is_empty()));
}

#[test]
fn max_participants_must_be_between_2_and_100() {
    for bad in [0, 1, 101] {
        given([])
            .acting_as_system()
            .when(ChangeDistrictSettings {
                max_participants: Some(bad),
                ..no_change()
            })
            .then_err(ValidationError::OutOfRange {
                field: "max_participants",
                min: 2,
                max: 100,
                got: bad.into(),
            });
    }
}

#[test]
fn blocked_patterns_are_validated_when_settings_change() {
    given([])
        .acting_as_system()
        .when(ChangeDistrictSettings {
            blocked_patterns: Some(vec!["###-##-####".to_owned(), "  ".to_owned()]),
            ..no_change()
        })
        .then_code("validation");
}

#[test]
fn a_district_keeps_at_most_a_hundred_blocked_patterns() {
    let patterns = |n: usize| (0..n).map(|i| format!("ID-{i}-###")).collect::<Vec<_>>();
    given([])
        .acting_as_system()
        .when(ChangeDistrictSettings {
            blocked_patterns: Some(patterns(MAX_BLOCKED_PATTERNS + 1)),
            ..no_change()
        })
        .then_err(ValidationError::TooMany {
            field: "blocked_patterns",
            max: MAX_BLOCKED_PATTERNS,
            got: MAX_BLOCKED_PATTERNS + 1,
        });
    given([])
        .acting_as_system()
        .when(ChangeDistrictSettings {
            blocked_patterns: Some(patterns(MAX_BLOCKED_PATTERNS)),
            ..no_change()
        })
        .events();
}

#[test]
fn a_settings_change_records_every_setting_as_it_now_is() {
    given([])
        .acting_as_system()
        .when(ChangeDistrictSettings {
            students_in_conversations: Some(true),
            max_participants: Some(30),
            default_channel: Some(ContactChannel::Email),
            blocked_patterns: Some(vec!["###-##-####".to_owned(), "###-##-####".to_owned()]),
        })
        .then([settings_changed(|s| {
            s.students_in_conversations = true;
            s.max_participants = 30;
            s.default_channel = ContactChannel::Email;
            s.blocked_patterns = vec![BlockedPattern::parse("###-##-####").unwrap()];
        })]);
}

#[test]
fn a_settings_change_that_changes_nothing_records_nothing() {
    given([])
        .acting_as_system()
        .when(ChangeDistrictSettings {
            max_participants: Some(15),
            ..no_change()
        })
        .then_nothing();
}

#[test]
fn sender_numbers_are_normalised_and_added_once() {
    let added: Event = SenderNumbersAdded {
        numbers: vec![PhoneNumber::parse("+15550009001").unwrap()],
        at: now(),
        by: sis(),
    }
    .into();
    let cmd = || AddSenderNumbers {
        numbers: vec!["+1 555 000 9001".to_owned(), "+15550009001".to_owned()],
    };
    given([])
        .acting_as_system()
        .when(cmd())
        .then([added.clone()]);
    given([added]).acting_as_system().when(cmd()).then_nothing();
    given([])
        .acting_as_system()
        .when(AddSenderNumbers { numbers: vec![] })
        .then_code("validation");
    given(district_events())
        .acting_as_system()
        .when(AddSenderNumbers {
            numbers: vec!["+15550001000".to_owned()],
        })
        .then_code("number_in_use");
}

#[test]
fn a_role_assigned_at_a_school_applies_only_at_that_school() {
    let d = district();
    let admin = person(ADMIN, PersonKind::Staff, "A")
        .role("school_admin", Some(SCHOOL))
        .build();
    assert!(d
        .permissions_of(&admin, SCHOOL)
        .contains(Permission::PersonalMessages));
    assert!(d.permissions_of(&admin, OTHER_SCHOOL).is_empty());
    assert!(d.district_wide_permissions(&admin).is_empty());
}

#[test]
fn a_district_wide_role_applies_at_every_school() {
    let d = district();
    let admin = person(DISTRICT_ADMIN, PersonKind::Staff, "D")
        .role("district_admin", None)
        .build();
    assert_eq!(d.permissions_of(&admin, OTHER_SCHOOL), PermissionSet::all());
}

#[test]
fn custom_role_permissions_come_from_the_district() {
    let d = evolve(
        district(),
        &RoleDefined {
            role_id: role("coach"),
            name: "Coach".to_owned(),
            permissions: [Permission::PersonalMessages].into_iter().collect(),
            at: now(),
            by: Actor::System("sis".to_owned()),
        }
        .into(),
    );
    let coach = person(TEACHER, PersonKind::Staff, "C")
        .role("coach", Some(SCHOOL))
        .role("teacher", None)
        .build();
    let at_school = d.permissions_of(&coach, SCHOOL);
    assert!(at_school.contains(Permission::PersonalMessages));
    assert!(!at_school.contains(Permission::SchoolInbox));
    assert!(d
        .permissions_anywhere(&coach)
        .contains(Permission::PersonalMessages));
    assert!(d.role(&role("coach")).is_some() && d.role(&role("nurse")).is_none());
}

#[test]
fn settings_default_to_15_participants_sms_and_no_students() {
    let s = DistrictState::default().settings().clone();
    assert_eq!(s.max_participants, 15);
    assert!(!s.students_in_conversations);
    assert_eq!(s.default_channel, ContactChannel::Sms);
    assert!(s.blocked_patterns.is_empty());
}

fn pool(numbers: &[&str]) -> Event {
    SenderNumbersAdded {
        numbers: numbers
            .iter()
            .map(|n| PhoneNumber::parse(n).unwrap())
            .collect(),
        at: now(),
        by: sis(),
    }
    .into()
}

fn assign(person_id: crate::ids::PersonId) -> AssignSenderNumber {
    AssignSenderNumber { person_id }
}

fn assigned(person_id: crate::ids::PersonId, number: &str) -> Event {
    SenderNumberAssigned {
        person_id,
        number: PhoneNumber::parse(number).unwrap(),
        at: now(),
    }
    .into()
}

#[test]
fn a_staff_member_gets_a_number_of_their_own_from_the_pool_at_their_first_sms() {
    given([pool(&["+15550009001", "+15550009002"])])
        .acting_as_system()
        .when(assign(ADMIN))
        .then([assigned(ADMIN, "+15550009001")]);
    given([
        pool(&["+15550009001", "+15550009002"]),
        assigned(ADMIN, "+15550009001"),
    ])
    .acting_as_system()
    .when(assign(TEACHER))
    .then([assigned(TEACHER, "+15550009002")]);
}

#[test]
fn a_staff_member_keeps_their_number() {
    let history = [pool(&["+15550009001"]), assigned(ADMIN, "+15550009001")];
    given(history.clone())
        .acting_as_system()
        .when(assign(ADMIN))
        .then_nothing();
    let state = history.iter().fold(DistrictState::default(), evolve);
    assert_eq!(
        state.sender_number_of(ADMIN).map(PhoneNumber::as_str),
        Some("+15550009001")
    );
}

#[test]
fn a_number_another_district_sends_from_is_never_taken() {
    let elsewhere = "+15550007777";
    let number = PhoneNumber::parse(elsewhere).unwrap();
    given([])
        .acting_as_system()
        .numbers_of_other_districts(&[elsewhere])
        .when(register_school("Hillside", Some(elsewhere)))
        .then_err(DistrictError::NumberOfAnotherDistrict {
            number: number.clone(),
        });
    given([])
        .acting_as_system()
        .numbers_of_other_districts(&[elsewhere])
        .when(AddSenderNumbers {
            numbers: vec!["+15550009001".to_owned(), elsewhere.to_owned()],
        })
        .then_code("number_in_use");
    // A pool number another district began sending from meanwhile is passed over.
    given([pool(&[elsewhere, "+15550009002"])])
        .acting_as_system()
        .numbers_of_other_districts(&[elsewhere])
        .when(assign(ADMIN))
        .then([assigned(ADMIN, "+15550009002")]);
}

#[test]
fn the_numbers_a_decision_needs_are_those_it_would_take() {
    let district = crate::State::District(
        [
            pool(&["+15550009001", "+15550009002"]),
            assigned(TEACHER, "+15550009001"),
        ]
        .iter()
        .fold(DistrictState::default(), evolve),
    );
    let numbers = |cmd: Command| -> Vec<String> {
        crate::numbers_needed(&cmd, &district)
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(
        numbers(register_school("Hillside", Some("+1 555 000 1000")).into()),
        vec!["+15550001000"]
    );
    assert_eq!(
        numbers(assign(ADMIN).into()),
        vec!["+15550009002"],
        "only the pool's free numbers"
    );
    assert!(numbers(register_school("Hillside", None).into()).is_empty());
}

#[test]
fn an_exhausted_pool_is_refused_with_a_clear_code() {
    given([pool(&["+15550009001"]), assigned(ADMIN, "+15550009001")])
        .acting_as_system()
        .when(assign(TEACHER))
        .then_code("no_sender_number");
}

#[test]
fn sender_numbers_go_to_staff_and_are_given_by_homeroom_services_only() {
    given([pool(&["+15550009001"])])
        .acting_as(DISTRICT_ADMIN)
        .when(assign(ADMIN))
        .then_err(DistrictError::NotAService);
    given([pool(&["+15550009001"])])
        .acting_as_system()
        .when(assign(GUARDIAN))
        .then_err(DistrictError::NotStaff {
            person_id: GUARDIAN,
        });
}
