use super::*;
use crate::ids::{PersonId, SchoolId};
use crate::testing::*;

fn number() -> PhoneNumber {
    PhoneNumber::parse("+15550001000").unwrap()
}

fn bind(district: &str, owner: NumberOwner) -> BindSmsNumber {
    BindSmsNumber {
        number: number(),
        district: DistrictId::parse(district).unwrap(),
        owner,
    }
}

fn bound(district: &str, owner: NumberOwner) -> Event {
    SmsNumberBound {
        number: number(),
        district: DistrictId::parse(district).unwrap(),
        owner,
        at: now(),
    }
    .into()
}

const SCHOOL_OWNER: NumberOwner = NumberOwner::School(SchoolId::new(uuid::Uuid::from_u128(1)));

#[test]
fn a_number_is_bound_to_the_district_that_sends_from_it() {
    given([])
        .acting_as_system()
        .when(bind("north", SCHOOL_OWNER))
        .then([bound("north", SCHOOL_OWNER)]);
    given([bound("north", SCHOOL_OWNER)])
        .acting_as_system()
        .when(bind("north", SCHOOL_OWNER))
        .then_nothing();
}

#[test]
fn a_number_belongs_to_one_district() {
    given([bound("north", SCHOOL_OWNER)])
        .acting_as_system()
        .when(bind("south", SCHOOL_OWNER))
        .then_err(SmsNumberError::NumberTaken { number: number() });
}

#[test]
fn the_district_may_move_its_number_to_another_identity() {
    let person = NumberOwner::Person(PersonId::new(uuid::Uuid::from_u128(2)));
    given([bound("north", SCHOOL_OWNER)])
        .acting_as_system()
        .when(bind("north", person))
        .then([bound("north", person)]);
}

#[test]
fn a_pool_number_is_held_for_its_district_until_someone_is_given_it() {
    let person = NumberOwner::Person(PersonId::new(uuid::Uuid::from_u128(2)));
    given([])
        .acting_as_system()
        .when(bind("north", NumberOwner::Pool))
        .then([bound("north", NumberOwner::Pool)]);
    // Another district cannot take it, even before anyone sends from it.
    given([bound("north", NumberOwner::Pool)])
        .acting_as_system()
        .when(bind("south", NumberOwner::Pool))
        .then_err(SmsNumberError::NumberTaken { number: number() });
    given([bound("north", NumberOwner::Pool)])
        .acting_as_system()
        .when(bind("north", person))
        .then([bound("north", person)]);
    // Once given, a late pool binding (a redelivered reaction) leaves it with them.
    given([bound("north", NumberOwner::Pool), bound("north", person)])
        .acting_as_system()
        .when(bind("north", NumberOwner::Pool))
        .then_nothing();
}

#[test]
fn the_number_stream_is_named_without_a_district() {
    let stream = crate::target(&bind("north", SCHOOL_OWNER).into(), &sis());
    assert_eq!(
        stream.stream_name(&DistrictId::parse("north").unwrap()),
        "smsnumber-+15550001000"
    );
}
