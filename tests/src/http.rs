//! The seeds' scenarios over HTTP, against any running Homeroom: an in-process server
//! on any backend (`tests/tests/http_scenarios.rs`) or the real binary
//! (`crates/homeroom/tests/`). A scenario only knows a base URL and how to get tokens.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Gets bearer tokens for a district and subject.
pub trait Tokens: Send + Sync {
    /// A token for `subject` in `district`; `system` grants scope `system`.
    fn token(&self, district: &str, subject: &str, system: bool) -> String;
}

/// An answer from the server.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body as JSON (`null` when it is not JSON).
    pub body: Value,
    /// The `Content-Type` header.
    pub content_type: String,
    /// Whether `Idempotent-Replayed: true` was sent.
    pub replayed: bool,
    /// The body as text.
    pub text: String,
}

impl Reply {
    /// Asserts success and returns the body.
    ///
    /// # Panics
    /// When the status is not 200.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "{}", self.text);
        &self.body
    }

    /// Asserts a problem document with `status` and `code`.
    ///
    /// # Panics
    /// When the answer is anything else.
    #[track_caller]
    pub fn refused(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.body["code"].as_str()),
            (status, Some(code)),
            "{}",
            self.text
        );
        assert_eq!(self.content_type, "application/problem+json");
    }
}

/// A Homeroom reachable over HTTP, with a way to get tokens.
pub struct Api {
    base: String,
    agent: ureq::Agent,
    tokens: Box<dyn Tokens>,
    cache: Mutex<HashMap<(String, String, bool), String>>,
}

impl Api {
    /// The server at `addr` (`127.0.0.1:port`).
    pub fn new(addr: &str, tokens: Box<dyn Tokens>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Self {
            base: format!("http://{addr}"),
            agent,
            tokens,
            cache: Mutex::default(),
        }
    }

    /// A token for `subject` in `district` (cached).
    pub fn token(&self, district: &str, subject: &str, system: bool) -> String {
        let key = (district.to_owned(), subject.to_owned(), system);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(key)
            .or_insert_with(|| self.tokens.token(district, subject, system))
            .clone()
    }

    /// `POST path` with `body`, or the transport error (connection refused, reset).
    ///
    /// # Errors
    /// When the request could not be sent or the answer read.
    pub fn try_post(
        &self,
        token: &str,
        path: &str,
        content_type: &str,
        body: &str,
        key: Option<Uuid>,
    ) -> Result<Reply, ureq::Error> {
        let mut request = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", content_type);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key.to_string());
        }
        reply(request.send(body)?)
    }

    /// Runs command `name` with `body`, under `key` when given.
    ///
    /// # Panics
    /// On a transport error.
    pub fn command(&self, token: &str, name: &str, body: &Value, key: Option<Uuid>) -> Reply {
        self.try_post(
            token,
            &format!("/v1/commands/{name}"),
            "application/json",
            &body.to_string(),
            key,
        )
        .unwrap_or_else(|e| panic!("POST {name}: {e}"))
    }

    /// Imports a role-assignment CSV file.
    ///
    /// # Panics
    /// On a transport error.
    pub fn import_roles(&self, token: &str, csv: &str, key: Option<Uuid>) -> Reply {
        self.try_post(token, "/v1/imports/role-assignments", "text/csv", csv, key)
            .unwrap_or_else(|e| panic!("POST import: {e}"))
    }

    /// `GET path`.
    ///
    /// # Errors
    /// When the request could not be sent or the answer read.
    pub fn try_get(&self, path: &str) -> Result<Reply, ureq::Error> {
        reply(self.agent.get(format!("{}{path}", self.base)).call()?)
    }

    /// `GET path`.
    ///
    /// # Panics
    /// On a transport error.
    pub fn get(&self, path: &str) -> Reply {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path` with a bearer token.
    ///
    /// # Panics
    /// On a transport error.
    pub fn read(&self, token: &str, path: &str) -> Reply {
        let request = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {token}"));
        request
            .call()
            .map_err(|e| e.to_string())
            .and_then(|r| reply(r).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The log's head position as `/readyz` reports it.
    ///
    /// # Panics
    /// When the server is not ready.
    pub fn head(&self) -> Value {
        self.get("/readyz").ok()["position"].clone()
    }

    /// Every event of the district's audit trail, as `system` (a token of the
    /// district's sync service) pages it, in log order, once the read models have
    /// applied `min`.
    ///
    /// # Panics
    /// When the audit trail cannot be read.
    pub fn audit_trail(&self, system: &str, min: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.read(
                system,
                &format!("/v1/audit?limit=1000&min_position={min}{after}"),
            );
            let body = page.ok();
            events.extend(
                body["events"]
                    .as_array()
                    .expect("an audit page")
                    .iter()
                    .cloned(),
            );
            match &body["next"] {
                Value::Null => return events,
                next => after = format!("&after={}", position_text(next)),
            }
        }
    }
}

/// A position as a query parameter, a header or an event id carries it: a token
/// string as it is, a number in digits.
pub fn position_text(position: &Value) -> String {
    match position {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn reply(mut response: ureq::http::Response<ureq::Body>) -> Result<Reply, ureq::Error> {
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let content_type = header("content-type");
    let replayed = header("idempotent-replayed") == "true";
    let text = response.body_mut().read_to_string()?;
    Ok(Reply {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        content_type,
        replayed,
        text,
    })
}

/// A district with one school and the people the seeds talk about, built over HTTP
/// as an SIS sync would (scope `system`).
pub struct District<'a> {
    /// The server.
    pub api: &'a Api,
    /// The tenant.
    pub name: String,
    /// The school.
    pub school: Uuid,
    /// The school's SMS number ([`crate::school_number_of`] the district's name).
    pub school_number: String,
    /// A School Admin.
    pub principal: Uuid,
    /// A Technical School Admin.
    pub technician: Uuid,
    /// `teen`'s teacher.
    pub teacher: Uuid,
    /// A student who is 14 today.
    pub teen: Uuid,
    /// A student who is 12 today.
    pub child: Uuid,
    /// `teen`'s guardian.
    pub parent: Uuid,
}

fn born(years: u32) -> String {
    let today = chrono::Utc::now().date_naive();
    today
        .checked_sub_months(chrono::Months::new(12 * years))
        .expect("a real date")
        .to_string()
}

impl<'a> District<'a> {
    /// Builds the district through the API.
    ///
    /// # Panics
    /// When a set-up command is refused.
    pub fn build(api: &'a Api, name: &str) -> Self {
        let d = Self {
            api,
            name: name.to_owned(),
            school_number: crate::school_number_of(name),
            school: Uuid::now_v7(),
            principal: Uuid::now_v7(),
            technician: Uuid::now_v7(),
            teacher: Uuid::now_v7(),
            teen: Uuid::now_v7(),
            child: Uuid::now_v7(),
            parent: Uuid::now_v7(),
        };
        d.system("RegisterSchool", json!({"school_id": d.school, "name": "Lincoln Middle School", "sms_number": d.school_number}));
        for (id, name) in [
            (d.principal, "Principal Skinner"),
            (d.technician, "Tech Admin"),
            (d.teacher, "Ms. Rivera"),
        ] {
            d.staff(id, name);
        }
        d.system("RegisterPerson", json!({"person_id": d.teen, "kind": "student", "name": "Dennis", "school_ids": [d.school], "birth_date": born(14), "contact_points": [{"channel": "sms", "address": "+15550002001"}]}));
        d.system("RegisterPerson", json!({"person_id": d.child, "kind": "student", "name": "Lisa", "school_ids": [d.school], "birth_date": born(12), "contact_points": [{"channel": "sms", "address": "+15550002002"}]}));
        d.system("RegisterPerson", json!({"person_id": d.parent, "kind": "guardian", "name": "Marge", "school_ids": [d.school], "contact_points": [{"channel": "sms", "address": "+15550002003"}]}));
        d.system(
            "LinkGuardian",
            json!({"guardian_id": d.parent, "student_id": d.teen}),
        );
        d.system(
            "SetStudentTeachers",
            json!({"student_id": d.teen, "teacher_ids": [d.teacher]}),
        );
        // The roles go in as a CSV import, as a district admin would upload them.
        let csv = format!(
            "person_id,role_id,school_id\n{},school_admin,{s}\n{},technical_school_admin,{s}\n{},teacher,{s}\n",
            d.principal,
            d.technician,
            d.teacher,
            s = d.school
        );
        let report = api.import_roles(&d.system_token(), &csv, None);
        assert_eq!(report.ok()["accepted"], 3, "{}", report.text);
        d
    }

    /// How many events the district's audit trail holds that were not recorded by
    /// Homeroom's own delivery services (which react in the background), once the read
    /// models have caught up with the log: what a refusal must leave unchanged.
    ///
    /// # Panics
    /// When the audit trail cannot be read.
    pub fn recorded(&self) -> usize {
        let min = position_text(&self.api.head());
        self.api
            .audit_trail(&self.system_token(), &min)
            .iter()
            .filter(|e| e["actor"] != "system:delivery")
            .count()
    }

    /// A token of the SIS sync service.
    pub fn system_token(&self) -> String {
        self.api.token(&self.name, "sis-sync", true)
    }

    /// Registers a staff member at the school.
    ///
    /// # Panics
    /// When refused.
    pub fn staff(&self, id: Uuid, name: &str) {
        self.system(
            "RegisterPerson",
            json!({"person_id": id, "kind": "staff", "name": name, "school_ids": [self.school]}),
        );
    }

    /// Runs a command as the SIS sync, asserting it is recorded.
    ///
    /// # Panics
    /// When refused.
    #[track_caller]
    pub fn system(&self, name: &str, body: Value) -> Value {
        self.api
            .command(&self.system_token(), name, &body, None)
            .ok()
            .clone()
    }

    /// Runs a command as `person`.
    pub fn by(&self, person: Uuid, name: &str, body: Value) -> Reply {
        self.by_keyed(person, name, body, None)
    }

    /// Runs a command as `person` under an idempotency key.
    pub fn by_keyed(&self, person: Uuid, name: &str, body: Value, key: Option<Uuid>) -> Reply {
        let token = self.api.token(&self.name, &person.to_string(), false);
        self.api.command(&token, name, &body, key)
    }
}

/// One scenario: it builds its own district(s) on the server and asserts as it goes.
pub type Scenario = fn(&Api);

/// Every scenario, by name, so each runner lists them once.
pub const SCENARIOS: &[(&str, Scenario)] = &[
    (
        "a_school_admin_messages_a_teen_but_not_a_twelve_year_old",
        a_school_admin_messages_a_teen_but_not_a_twelve_year_old,
    ),
    (
        "a_technical_school_admin_needs_a_custom_role_for_personal_messages",
        a_technical_school_admin_needs_a_custom_role_for_personal_messages,
    ),
    (
        "personal_messages_alone_cannot_send_from_the_school",
        personal_messages_alone_cannot_send_from_the_school,
    ),
    (
        "a_sixteenth_participant_is_refused",
        a_sixteenth_participant_is_refused,
    ),
    (
        "a_parent_starts_conversations_with_current_teachers_only",
        a_parent_starts_conversations_with_current_teachers_only,
    ),
    (
        "a_stopped_conversation_refuses_replies",
        a_stopped_conversation_refuses_replies,
    ),
    (
        "writing_again_takes_a_stopped_personal_conversation_up_again",
        writing_again_takes_a_stopped_personal_conversation_up_again,
    ),
    (
        "retries_with_the_same_idempotency_key_record_one_event",
        retries_with_the_same_idempotency_key_record_one_event,
    ),
    (
        "a_token_of_one_district_cannot_see_another",
        a_token_of_one_district_cannot_see_another,
    ),
    (
        "malformed_requests_record_nothing",
        malformed_requests_record_nothing,
    ),
    (
        "a_sent_message_reaches_both_inboxes_and_the_thread",
        a_sent_message_reaches_both_inboxes_and_the_thread,
    ),
    (
        "personal_messages_alone_sees_only_its_own_conversations",
        personal_messages_alone_sees_only_its_own_conversations,
    ),
    (
        "oversight_and_the_student_record_show_personal_messages",
        oversight_and_the_student_record_show_personal_messages,
    ),
    (
        "another_schools_messages_to_a_shared_guardian_stay_off_this_schools_record",
        another_schools_messages_to_a_shared_guardian_stay_off_this_schools_record,
    ),
    (
        "staff_whose_roles_are_revoked_leave_the_schools_conversations",
        staff_whose_roles_are_revoked_leave_the_schools_conversations,
    ),
    (
        "the_audit_trail_holds_every_event_and_verifies",
        the_audit_trail_holds_every_event_and_verifies,
    ),
    (
        "a_conversation_exports_as_a_file",
        a_conversation_exports_as_a_file,
    ),
    (
        "a_retry_under_the_callers_ids_records_once",
        a_retry_under_the_callers_ids_records_once,
    ),
    (
        "reads_of_another_district_answer_404",
        reads_of_another_district_answer_404,
    ),
    (
        "the_character_counter_previews_a_personal_message",
        the_character_counter_previews_a_personal_message,
    ),
    (
        "the_event_stream_tells_of_new_messages_and_resumes",
        the_event_stream_tells_of_new_messages_and_resumes,
    ),
];

/// `min_position=…` for the position a command answered (a number, or a string token
/// passed back unchanged).
pub fn after(result: &Value) -> String {
    match &result["position"] {
        Value::String(s) => format!("min_position={s}"),
        other => format!("min_position={other}"),
    }
}

/// The personal message lands in the sender's and the recipient's inbox and in the
/// thread, with its delivery; reading moves the recipient's unread count and read receipt.
pub fn a_sent_message_reaches_both_inboxes_and_the_thread(api: &Api) {
    let d = District::build(api, &district_name("shelbyville"));
    let sent = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.teen, "body": "Hi {student_name}, see me after class."}),
        )
        .ok()
        .clone();
    let conversation = sent["conversation_id"].as_str().unwrap().to_owned();
    let message = sent["message_id"].as_str().unwrap().to_owned();
    let principal = api.token(&d.name, &d.principal.to_string(), false);
    let teen = api.token(&d.name, &d.teen.to_string(), false);

    let mine = api.read(
        &principal,
        &format!("/v1/inbox?box=personal&{}", after(&sent)),
    );
    let row = &mine.ok()["conversations"][0];
    assert_eq!(
        row["conversation_id"],
        conversation.as_str(),
        "{}",
        mine.text
    );
    assert_eq!(row["kind"], "personal");
    assert_eq!(row["unread_count"], 0, "one's own message is not unread");
    assert_eq!(row["last_message"]["message_id"], message.as_str());

    let theirs = api.read(&teen, &format!("/v1/inbox?{}", after(&sent)));
    let row = &theirs.ok()["conversations"][0];
    assert_eq!(row["unread_count"], 1, "{}", theirs.text);
    assert_eq!(
        row["last_message"]["body"], "Hi Dennis, see me after class.",
        "the recipient sees the text rendered for them"
    );

    let thread = api.read(
        &principal,
        &format!("/v1/conversations/{conversation}?{}", after(&sent)),
    );
    let body = thread.ok();
    assert_eq!(body["stopped"], false);
    let participants: Vec<&str> = body["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["person_id"].as_str().unwrap())
        .collect();
    assert!(
        participants.contains(&d.teen.to_string().as_str()),
        "{}",
        thread.text
    );
    let m = &body["messages"][0];
    assert_eq!(m["original_body"], "Hi {student_name}, see me after class.");
    assert_eq!(m["deliveries"][0]["recipient_id"], d.teen.to_string());
    assert_eq!(m["deliveries"][0]["channel"], "sms");
    assert!(m["deliveries"][0]["status"].is_string());

    let read = d
        .by(
            d.teen,
            "MarkRead",
            json!({"conversation_id": conversation, "up_to_message_id": message}),
        )
        .ok()
        .clone();
    let thread = api.read(
        &principal,
        &format!("/v1/conversations/{conversation}?{}", after(&read)),
    );
    assert_eq!(
        thread.ok()["messages"][0]["read_by"],
        json!([d.teen.to_string()]),
        "{}",
        thread.text
    );
    let theirs = api.read(&teen, &format!("/v1/inbox?{}", after(&read)));
    assert_eq!(theirs.ok()["conversations"][0]["unread_count"], 0);
}

/// A custom role holding only `personal_messages` sees its own conversations and
/// nothing else: no school inbox, no oversight, no one else's thread, no record, no audit.
pub fn personal_messages_alone_sees_only_its_own_conversations(api: &Api) {
    let d = District::build(api, &district_name("springfield"));
    let nurse = Uuid::now_v7();
    d.staff(nurse, "Nurse Joy");
    d.system(
        "DefineRole",
        json!({"role_id": "nurse", "name": "Nurse", "permissions": ["personal_messages"]}),
    );
    let csv = format!(
        "person_id,role_id,school_id
{nurse},nurse,{}
",
        d.school
    );
    api.import_roles(&d.system_token(), &csv, None).ok();
    let own = d
        .by(
            nurse,
            "SendPersonalMessage",
            json!({"recipient_id": d.parent, "body": "Dennis's inhaler is at the office"}),
        )
        .ok()
        .clone();
    let other = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.teen, "body": "Hi"}),
        )
        .ok()
        .clone();
    let token = api.token(&d.name, &nurse.to_string(), false);
    let inbox = api.read(&token, &format!("/v1/inbox?{}", after(&other)));
    let rows = inbox.ok()["conversations"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1, "{}", inbox.text);
    assert_eq!(rows[0]["conversation_id"], own["conversation_id"]);
    api.read(
        &token,
        &format!(
            "/v1/conversations/{}",
            own["conversation_id"].as_str().unwrap()
        ),
    )
    .ok();
    api.read(
        &token,
        &format!(
            "/v1/conversations/{}",
            other["conversation_id"].as_str().unwrap()
        ),
    )
    .refused(403, "not_permitted");
    api.read(&token, "/v1/inbox?box=school")
        .refused(403, "not_permitted");
    api.read(&token, "/v1/oversight/conversations")
        .refused(403, "not_permitted");
    api.read(&token, &format!("/v1/students/{}/messages", d.teen))
        .refused(403, "not_permitted");
    api.read(&token, "/v1/audit").refused(403, "not_permitted");
}

/// A school admin's oversight sees every conversation of the school, personal ones
/// included, and finds them by text and participant; the student's record logs the
/// staff messages and the family's replies.
pub fn oversight_and_the_student_record_show_personal_messages(api: &Api) {
    let d = District::build(api, &district_name("capitalcity"));
    let counselor = Uuid::now_v7();
    d.staff(counselor, "Counselor Troi");
    d.system(
        "DefineRole",
        json!({"role_id": "counselor", "name": "Counselor", "permissions": ["personal_messages"]}),
    );
    let csv = format!(
        "person_id,role_id,school_id
{counselor},counselor,{}
",
        d.school
    );
    api.import_roles(&d.system_token(), &csv, None).ok();
    let sent = d
        .by(
            counselor,
            "SendPersonalMessage",
            json!({"recipient_id": d.teen, "body": "Your schedule change is approved"}),
        )
        .ok()
        .clone();
    let conversation = sent["conversation_id"].as_str().unwrap().to_owned();
    let reply = d
        .by(
            d.teen,
            "PostMessage",
            json!({"conversation_id": conversation, "message_id": Uuid::now_v7(), "body": "Thank you!"}),
        )
        .ok()
        .clone();
    let principal = api.token(&d.name, &d.principal.to_string(), false);
    let found = api.read(
        &principal,
        &format!("/v1/oversight/conversations?q=schedule&{}", after(&reply)),
    );
    let rows = found.ok()["conversations"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1, "{}", found.text);
    assert_eq!(rows[0]["conversation_id"], conversation.as_str());
    assert_eq!(rows[0]["kind"], "personal");
    let by_participant = api.read(
        &principal,
        &format!(
            "/v1/oversight/conversations?participant_id={counselor}&school_id={}",
            d.school
        ),
    );
    assert_eq!(
        by_participant.ok()["conversations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let nothing = api.read(
        &principal,
        "/v1/oversight/conversations?q=no-such-words-anywhere",
    );
    assert_eq!(nothing.ok()["conversations"], json!([]));
    api.read(
        &principal,
        &format!("/v1/oversight/conversations?school_id={}", Uuid::now_v7()),
    )
    .refused(404, "unknown_school");
    api.read(
        &principal,
        &format!("/v1/inbox?box=school&school_id={}", Uuid::now_v7()),
    )
    .refused(404, "unknown_school");
    api.read(&principal, &format!("/v1/conversations/{conversation}"))
        .ok();

    let record = api.read(&principal, &format!("/v1/students/{}/messages", d.teen));
    let entries = record.ok()["messages"].as_array().unwrap().clone();
    let directions: Vec<&str> = entries
        .iter()
        .map(|e| e["direction"].as_str().unwrap())
        .collect();
    assert_eq!(directions, ["outbound", "inbound"], "{}", record.text);
    assert_eq!(entries[0]["sender_id"], counselor.to_string());
    assert_eq!(entries[0]["deliveries"][0]["channel"], "sms");
    assert_eq!(entries[1]["body"], "Thank you!");
    // The teacher holds no student_record: the record is closed to them.
    let teacher = api.token(&d.name, &d.teacher.to_string(), false);
    api.read(&teacher, &format!("/v1/students/{}/messages", d.teen))
        .refused(403, "not_permitted");
    api.read(&principal, &format!("/v1/students/{}/messages", d.parent))
        .refused(404, "unknown_person");
}

/// A guardian with a child at each of two schools: what the second school's principal
/// writes to them about that child is on that child's record, not on the first school's
/// student's, and the first school's principal does not read it there.
pub fn another_schools_messages_to_a_shared_guardian_stay_off_this_schools_record(api: &Api) {
    let d = District::build(api, &district_name("twoschools"));
    let (high, principal2, sibling) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    d.system(
        "RegisterSchool",
        json!({"school_id": high, "name": "Washington High", "sms_number": crate::school_number_of(&format!("{}-high", d.name))}),
    );
    d.system("RegisterPerson", json!({"person_id": principal2, "kind": "staff", "name": "Principal Two", "school_ids": [high]}));
    d.system("RegisterPerson", json!({"person_id": sibling, "kind": "student", "name": "Mia", "school_ids": [high], "birth_date": born(16)}));
    d.system(
        "LinkGuardian",
        json!({"guardian_id": d.parent, "student_id": sibling}),
    );
    d.system(
        "AssignRole",
        json!({"person_id": principal2, "role_id": "school_admin", "school_id": high}),
    );
    let sent = d
        .by(
            principal2,
            "SendPersonalMessage",
            json!({"recipient_id": d.parent, "body": "Mia's IEP meeting is on Friday"}),
        )
        .ok()
        .clone();
    let conversation = sent["conversation_id"].as_str().unwrap().to_owned();
    let reply = d
        .by(
            d.parent,
            "PostMessage",
            json!({"conversation_id": conversation, "message_id": Uuid::now_v7(), "body": "We will be there"}),
        )
        .ok()
        .clone();
    let bodies = |reader: Uuid, student: Uuid| -> Vec<String> {
        let token = api.token(&d.name, &reader.to_string(), false);
        let record = api.read(
            &token,
            &format!("/v1/students/{student}/messages?{}", after(&reply)),
        );
        record.ok()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        bodies(d.principal, d.teen),
        Vec::<String>::new(),
        "Washington High's message about Mia is not on Dennis's record at Lincoln"
    );
    assert_eq!(
        bodies(principal2, sibling),
        ["Mia's IEP meeting is on Friday", "We will be there"]
    );
    let principal = api.token(&d.name, &d.principal.to_string(), false);
    api.read(&principal, &format!("/v1/students/{sibling}/messages"))
        .refused(403, "not_permitted");

    // A custody change: the SIS ends the guardian's link to Mia. Washington High no
    // longer reaches them through her; her record keeps what was written until then.
    let recorded = d.recorded();
    let unlink = json!({"guardian_id": d.parent, "student_id": sibling});
    d.by(d.principal, "UnlinkGuardian", unlink.clone())
        .refused(403, "not_permitted");
    assert_eq!(d.recorded(), recorded, "a refusal records nothing");
    d.system("UnlinkGuardian", unlink.clone());
    let again = d.system("UnlinkGuardian", unlink);
    assert_eq!(again["events"], json!([]), "ending it twice is nothing new");
    d.by(
        principal2,
        "SendPersonalMessage",
        json!({"recipient_id": d.parent, "body": "Mia's report card"}),
    )
    .refused(422, "recipient_not_reachable");
    let record = api.read(
        &api.token(&d.name, &principal2.to_string(), false),
        &format!("/v1/students/{sibling}/messages?{}", after(&again)),
    );
    assert_eq!(record.ok()["messages"].as_array().unwrap().len(), 2);
}

/// A principal whose roles are revoked no longer reads, writes or is sent the school's
/// conversations they were in; the family and the teacher carry on without them.
pub fn staff_whose_roles_are_revoked_leave_the_schools_conversations(api: &Api) {
    let d = District::build(api, &district_name("offboarding"));
    let personal = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.parent, "body": "About Dennis"}),
        )
        .ok()
        .clone();
    let personal = personal["conversation_id"].as_str().unwrap().to_owned();
    let group = Uuid::now_v7();
    d.by(
        d.principal,
        "StartConversation",
        json!({"conversation_id": group, "school_id": d.school, "participant_ids": [d.parent, d.teacher], "body": "Meeting on Friday"}),
    )
    .ok();
    d.system(
        "RevokeRole",
        json!({"person_id": d.principal, "role_id": "school_admin", "school_id": d.school}),
    );
    let reply = d
        .by(
            d.parent,
            "PostMessage",
            json!({"conversation_id": group, "message_id": Uuid::now_v7(), "body": "Friday suits us"}),
        )
        .ok()
        .clone();

    let principal = api.token(&d.name, &d.principal.to_string(), false);
    for conversation in [personal.clone(), group.to_string()] {
        api.read(
            &principal,
            &format!("/v1/conversations/{conversation}?{}", after(&reply)),
        )
        .refused(403, "not_permitted");
        api.read(
            &principal,
            &format!("/v1/conversations/{conversation}/export"),
        )
        .refused(403, "not_permitted");
    }
    let inbox = api.read(&principal, &format!("/v1/inbox?{}", after(&reply)));
    assert_eq!(inbox.ok()["conversations"], json!([]), "{}", inbox.text);
    d.by(
        d.principal,
        "PostMessage",
        json!({"conversation_id": group, "message_id": Uuid::now_v7(), "body": "Still here"}),
    )
    .refused(403, "not_permitted");

    let teacher = api.token(&d.name, &d.teacher.to_string(), false);
    let thread = api.read(
        &teacher,
        &format!("/v1/conversations/{group}?{}", after(&reply)),
    );
    let messages = thread.ok()["messages"].as_array().unwrap().clone();
    let last = messages.last().unwrap();
    assert_eq!(last["body"], "Friday suits us");
    let recipients: Vec<&str> = last["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["recipient_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        recipients,
        [d.teacher.to_string()],
        "the principal is sent the reply no more"
    );
}

/// The audit trail holds every event with its metadata and hash chain, pages by
/// position, and `verify` finds every chain intact.
pub fn the_audit_trail_holds_every_event_and_verifies(api: &Api) {
    let d = District::build(api, &district_name("audit"));
    let sent = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.teen, "body": "Report cards are out"}),
        )
        .ok()
        .clone();
    let system = d.system_token();
    let page = api.read(&system, &format!("/v1/audit?limit=1000&{}", after(&sent)));
    let events = page.ok()["events"].as_array().unwrap().clone();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for expected in [
        "school_registered",
        "person_registered",
        "role_assigned",
        "conversation_started",
        "message_posted",
    ] {
        assert!(
            types.contains(&expected),
            "{expected} missing from {types:?}"
        );
    }
    let posted = events
        .iter()
        .find(|e| e["type"] == "message_posted")
        .unwrap();
    assert_eq!(posted["actor"], d.principal.to_string());
    assert_eq!(posted["district"], d.name.as_str());
    assert_eq!(posted["hash"].as_str().unwrap().len(), 64);
    assert_eq!(posted["data"]["body"], "Report cards are out");
    let started = events
        .iter()
        .find(|e| e["type"] == "conversation_started")
        .unwrap();
    assert_eq!(
        posted["prev_hash"], started["hash"],
        "chained to the previous event of its stream"
    );
    // Paging: two events at a time walks the same trail (the delivery services may
    // have added to it meanwhile: compare up to where the first read ended).
    let ids =
        |list: &[Value]| -> Vec<Value> { list.iter().map(|e| e["event_id"].clone()).collect() };
    let first_read = ids(&events);
    let mut walked = Vec::new();
    let mut next = String::new();
    while walked.len() < first_read.len() {
        let page = api.read(&system, &format!("/v1/audit?limit=2{next}"));
        let body = page.ok();
        walked.extend(ids(body["events"].as_array().unwrap()));
        match &body["next"] {
            Value::Null => break,
            Value::String(s) => next = format!("&after={s}"),
            other => next = format!("&after={other}"),
        }
    }
    walked.truncate(first_read.len());
    assert_eq!(walked, first_read);
    let by_actor = api.read(&system, &format!("/v1/audit?actor={}", d.principal));
    assert!(by_actor.ok()["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"] == d.principal.to_string()));
    let verified = api.read(&system, "/v1/audit/verify");
    let body = verified.ok();
    assert_eq!(body["ok"], true, "{}", verified.text);
    assert!(body["checked"].as_u64().unwrap() >= events.len() as u64);
    assert_eq!(body["broken"], json!([]));
    let principal = api.token(&d.name, &d.principal.to_string(), false);
    api.read(&principal, "/v1/audit")
        .refused(403, "not_permitted");
    api.read(&system, "/v1/audit?after=not-a-position")
        .refused(400, "validation");
    api.read(&system, "/v1/audit/verify?foo=1")
        .refused(400, "validation");
    api.read(&system, "/v1/audit/verify?min_position=abc")
        .refused(400, "validation");
    api.read(&system, "/v1/audit/verify?min_position=999999999")
        .refused(503, "stale");
    let position = verified.body["checked"].as_u64().unwrap();
    assert_eq!(
        api.read(
            &system,
            &format!("/v1/audit/verify?min_position={position}")
        )
        .ok()["ok"],
        true
    );
}

/// A records officer downloads a whole conversation as a file.
pub fn a_conversation_exports_as_a_file(api: &Api) {
    let d = District::build(api, &district_name("export"));
    let sent = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.teen, "body": "Bring your permission slip, please"}),
        )
        .ok()
        .clone();
    let conversation = sent["conversation_id"].as_str().unwrap();
    let principal = api.token(&d.name, &d.principal.to_string(), false);
    let file = api.read(
        &principal,
        &format!("/v1/conversations/{conversation}/export?{}", after(&sent)),
    );
    assert_eq!(file.status, 200, "{}", file.text);
    assert_eq!(file.content_type, "application/x-ndjson");
    let lines: Vec<Value> = file
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["record"], "conversation");
    assert_eq!(lines[1]["record"], "message");
    assert_eq!(lines[1]["body"], "Bring your permission slip, please");
    assert_eq!(lines[1]["deliveries"][0]["channel"], "sms");
    // The CSV names the participants, and a cell a spreadsheet would run as a formula
    // starts with an apostrophe; the JSON keeps the text exactly. Each delivery row says
    // whether its recipient has read the message (the teen read the first one).
    let first = sent["message_id"].as_str().unwrap().to_owned();
    d.by(
        d.teen,
        "MarkRead",
        json!({"conversation_id": conversation, "up_to_message_id": first}),
    )
    .ok();
    let formula = d
        .by(
            d.principal,
            "PostMessage",
            json!({"conversation_id": conversation, "message_id": Uuid::now_v7(), "body": "=1+1 is the answer"}),
        )
        .ok()
        .clone();
    let csv = api.read(
        &principal,
        &format!(
            "/v1/conversations/{conversation}/export?format=csv&{}",
            after(&formula)
        ),
    );
    assert_eq!(csv.status, 200);
    assert!(csv.content_type.starts_with("text/csv"));
    assert!(
        csv.text
            .starts_with("record,conversation_id,title,message_id"),
        "{}",
        csv.text
    );
    // Read as CSV: a text sent by SMS ends with its signature on a line of its own,
    // quoted inside its cell.
    let rows: Vec<Vec<String>> = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(csv.text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(
        rows.len(),
        5,
        "header, two participants, two deliveries: {}",
        csv.text
    );
    // The last columns say why a `refused_reply` row was not posted and why a delivery
    // failed (none here).
    let last_three = |row: &[String]| row[row.len() - 5..row.len() - 2].join(",");
    assert_eq!(
        rows[0][rows[0].len() - 2..].join(","),
        "refused_because,delivery_error"
    );
    assert!(rows[1..]
        .iter()
        .all(|r| r[r.len() - 2..].iter().all(String::is_empty)));
    for (person, kind) in [(d.principal, "staff"), (d.teen, "student")] {
        assert!(
            rows.iter().any(|r| r[0] == "participant"
                && r.contains(&person.to_string())
                && r.iter().any(|cell| cell == kind)),
            "{person} as a participant: {}",
            csv.text
        );
    }
    assert_eq!(
        last_three(&rows[0]),
        "read,conversation_kind,conversation_stopped"
    );
    assert_eq!(rows[3][0], "delivery", "{}", csv.text);
    assert!(rows[3]
        .iter()
        .any(|cell| cell.contains("Bring your permission slip, please")));
    assert_eq!(last_three(&rows[3]), "true,personal,false", "{}", csv.text);
    assert!(
        rows[4].iter().any(|cell| cell == "'=1+1 is the answer"),
        "{}",
        csv.text
    );
    assert_eq!(last_three(&rows[4]), "false,personal,false", "{}", csv.text);
    let json = api.read(
        &principal,
        &format!("/v1/conversations/{conversation}/export?format=json"),
    );
    let doc: Value = serde_json::from_str(&json.text).unwrap();
    assert_eq!(doc["messages"][1]["body"], "=1+1 is the answer");
    assert_eq!(doc["messages"][0]["read_by"], json!([d.teen.to_string()]));
    assert_eq!(doc["messages"][1]["read_by"], json!([]));
    let teacher = api.token(&d.name, &d.teacher.to_string(), false);
    api.read(
        &teacher,
        &format!("/v1/conversations/{conversation}/export"),
    )
    .refused(403, "not_permitted");
    // A family member's export holds their own copy of each message, not another
    // family's ("Dear Ned"); the records officer's holds every copy.
    let neighbour = Uuid::now_v7();
    d.system("RegisterPerson", json!({"person_id": neighbour, "kind": "guardian", "name": "Ned", "school_ids": [d.school], "contact_points": [{"channel": "sms", "address": "+15550002999"}]}));
    let group = Uuid::now_v7();
    let started = d
        .by(
            d.principal,
            "StartConversation",
            json!({"conversation_id": group, "school_id": d.school, "participant_ids": [d.parent, neighbour], "body": "Dear {recipient_name}, the fair is on Friday"}),
        )
        .ok()
        .clone();
    let copies = |token: &str| -> Vec<String> {
        let file = api.read(
            token,
            &format!(
                "/v1/conversations/{group}/export?format=json&{}",
                after(&started)
            ),
        );
        assert_eq!(file.status, 200, "{}", file.text);
        let doc: Value = serde_json::from_str(&file.text).unwrap();
        doc["messages"][0]["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["text"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut every = copies(&principal);
    every.sort();
    assert_eq!(
        every,
        vec![
            "Dear Marge, the fair is on Friday",
            "Dear Ned, the fair is on Friday"
        ]
    );
    let marge = api.token(&d.name, &d.parent.to_string(), false);
    assert_eq!(copies(&marge), vec!["Dear Marge, the fair is on Friday"]);
    // Her thread agrees: the deliveries she sees are hers, not how Ned was reached.
    let thread = api.read(&marge, &format!("/v1/conversations/{group}"));
    let recipients: Vec<&str> = thread.ok()["messages"][0]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["recipient_id"].as_str().unwrap())
        .collect();
    assert_eq!(recipients, vec![d.parent.to_string()], "{}", thread.text);
    let every = api.read(&principal, &format!("/v1/conversations/{group}"));
    assert_eq!(
        every.ok()["messages"][0]["deliveries"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "staff see every recipient's delivery"
    );
}

/// Another district's conversations and students are unknown to a token of this one;
/// a read waiting for a position the log has not reached answers 503 `stale`.
pub fn reads_of_another_district_answer_404(api: &Api) {
    let a = District::build(api, &district_name("reada"));
    let b = District::build(api, &district_name("readb"));
    let sent = a
        .by(
            a.principal,
            "SendPersonalMessage",
            json!({"recipient_id": a.teen, "body": "Hi"}),
        )
        .ok()
        .clone();
    let conversation = sent["conversation_id"].as_str().unwrap();
    let b_admin = api.token(&b.name, &b.principal.to_string(), false);
    api.read(
        &b_admin,
        &format!("/v1/conversations/{conversation}?{}", after(&sent)),
    )
    .refused(404, "unknown_conversation");
    api.read(
        &b_admin,
        &format!("/v1/conversations/{conversation}/export"),
    )
    .refused(404, "unknown_conversation");
    api.read(&b_admin, &format!("/v1/students/{}/messages", a.teen))
        .refused(404, "unknown_person");
    let b_system = b.system_token();
    let trail = api.read(&b_system, "/v1/audit?limit=1000");
    assert!(trail.ok()["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["district"] == b.name.as_str()));
    api.read(&b_admin, "/v1/conversations/not-a-uuid")
        .refused(400, "validation");
    api.read(&b_admin, "/v1/inbox?box=everything")
        .refused(400, "validation");
    // A page holds at least one item: `limit=0` is a mistake, not "the default".
    for path in [
        "/v1/inbox?limit=0",
        "/v1/audit?limit=0",
        "/v1/oversight/conversations?limit=0",
    ] {
        api.read(&b_admin, path).refused(400, "validation");
    }
    let nobody = api.token(&b.name, &Uuid::now_v7().to_string(), false);
    for path in [
        "/v1/inbox?box=personal",
        "/v1/inbox?box=school",
        "/v1/audit",
    ] {
        api.read(&nobody, path).refused(404, "unknown_person");
    }
    // A position in the shape of another engine's (a string, here where they are
    // numbers) is refused, not read as before or after everything.
    let foreign = "00000000000000000001-00000000000000000001";
    api.read(&b_admin, &format!("/v1/inbox?min_position={foreign}"))
        .refused(400, "validation");
    api.read(&b.system_token(), &format!("/v1/audit?after={foreign}"))
        .refused(400, "validation");
    let stale = api.read(&b_admin, "/v1/inbox?min_position=999999999");
    stale.refused(503, "stale");
    let detail = stale.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("not caught up with position"),
        "a stale read says why, not that the server failed: {detail}"
    );
}

fn district_name(prefix: &str) -> String {
    format!("{prefix}-{}", &Uuid::now_v7().simple().to_string()[20..])
}

/// A school admin sends a personal message to a 14-year-old, and is refused
/// (`recipient_too_young`) for a 12-year-old.
pub fn a_school_admin_messages_a_teen_but_not_a_twelve_year_old(api: &Api) {
    let d = District::build(api, &district_name("springfield"));
    let sent = d.by(
        d.principal,
        "SendPersonalMessage",
        json!({"recipient_id": d.teen, "body": "Hi {student_name}, see me after class."}),
    );
    let sent = sent.ok();
    assert!(sent["conversation_id"].is_string() && sent["message_id"].is_string());
    assert_eq!(sent["delivery_ids"].as_array().map(Vec::len), Some(1));
    assert_eq!(sent["events"][1]["type"], "message_posted");
    let recorded = d.recorded();
    d.by(
        d.principal,
        "SendPersonalMessage",
        json!({"recipient_id": d.child, "body": "Hi"}),
    )
    .refused(422, "recipient_too_young");
    assert_eq!(d.recorded(), recorded, "a refusal records nothing");
}

/// A Technical School Admin is refused (`not_permitted`) until a custom role granting
/// `personal_messages` is assigned.
pub fn a_technical_school_admin_needs_a_custom_role_for_personal_messages(api: &Api) {
    let d = District::build(api, &district_name("shelbyville"));
    let message = json!({"recipient_id": d.parent, "body": "Hello from the office"});
    d.by(d.technician, "SendPersonalMessage", message.clone())
        .refused(403, "not_permitted");
    d.system(
        "DefineRole",
        json!({"role_id": "messenger", "name": "Personal messages", "permissions": ["personal_messages"]}),
    );
    d.system(
        "AssignRole",
        json!({"person_id": d.technician, "role_id": "messenger", "school_id": d.school}),
    );
    d.by(d.technician, "SendPersonalMessage", message).ok();
}

/// A user with only `personal_messages` cannot send `from: school`.
pub fn personal_messages_alone_cannot_send_from_the_school(api: &Api) {
    let d = District::build(api, &district_name("capital"));
    let nurse = Uuid::now_v7();
    d.staff(nurse, "Nurse Joy");
    d.system(
        "DefineRole",
        json!({"role_id": "nurse", "name": "Nurse", "permissions": ["personal_messages"]}),
    );
    let csv = format!("person_id,role_id,school_id\n{nurse},nurse,{}\n", d.school);
    api.import_roles(&d.system_token(), &csv, None).ok();
    d.by(
        nurse,
        "StartConversation",
        json!({"conversation_id": Uuid::now_v7(), "school_id": d.school, "participant_ids": [d.parent], "body": "From the school", "from": "school"}),
    )
    .refused(403, "not_permitted");
    d.by(
        nurse,
        "SendPersonalMessage",
        json!({"recipient_id": d.parent, "body": "From me"}),
    )
    .ok();
    // The school admin holds school_inbox and may.
    let conversation = Uuid::now_v7();
    let started = d
        .by(
            d.principal,
            "StartConversation",
            json!({"conversation_id": conversation, "school_id": d.school, "participant_ids": [d.parent], "body": "From the school", "from": "school"}),
        )
        .ok()
        .clone();
    // The family reads it as the school's, the staff as who wrote it.
    let author = |person: Uuid| {
        let token = api.token(&d.name, &person.to_string(), false);
        let thread = api.read(
            &token,
            &format!("/v1/conversations/{conversation}?{}", after(&started)),
        );
        thread.ok()["messages"][0]["author_name"].clone()
    };
    assert_eq!(author(d.parent), "Lincoln Middle School");
    assert_ne!(author(d.principal), "Lincoln Middle School");
    assert!(author(d.principal).is_string());
    // Nor does the family find the staff member among the people of the conversation,
    // in the thread or in an export: they talk with the school.
    let listed = |person: Uuid, path: &str| {
        let token = api.token(&d.name, &person.to_string(), false);
        api.read(&token, &format!("{path}&{}", after(&started)))
            .ok()["participants"]
            .as_array()
            .map(|people| {
                people
                    .iter()
                    .filter_map(|p| p["person_id"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let (principal, parent) = (d.principal.to_string(), d.parent.to_string());
    for path in [
        format!("/v1/conversations/{conversation}?"),
        format!("/v1/conversations/{conversation}/export?format=json"),
    ] {
        assert_eq!(listed(d.parent, &path), vec![parent.clone()], "{path}");
        let staff_view = listed(d.principal, &path);
        assert!(staff_view.contains(&principal), "{path}: {staff_view:?}");
        assert!(staff_view.contains(&parent), "{path}: {staff_view:?}");
    }
    // Nor anywhere else in what the family reads: the message from the school is the
    // school's (its id as the author), the conversation the school's, and the principal
    // reading the family's answer is the school reading it.
    let parents_token = api.token(&d.name, &parent, false);
    let inbox = api.read(
        &parents_token,
        &format!("/v1/inbox?box=personal&{}", after(&started)),
    );
    let item = inbox.ok()["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["conversation_id"] == conversation.to_string())
        .unwrap()
        .clone();
    assert_eq!(item["last_message"]["author_id"], d.school.to_string());
    assert_eq!(item["last_message"]["sent_as"], "school");
    let answer = Uuid::now_v7();
    d.by(
        d.parent,
        "PostMessage",
        json!({"conversation_id": conversation, "message_id": answer, "body": "Thank you"}),
    )
    .ok();
    let read = d
        .by(
            d.principal,
            "MarkRead",
            json!({"conversation_id": conversation, "up_to_message_id": answer}),
        )
        .ok()
        .clone();
    let principals_token = api.token(&d.name, &principal, false);
    for path in [
        format!("/v1/conversations/{conversation}?{}", after(&read)),
        format!(
            "/v1/conversations/{conversation}/export?format=json&{}",
            after(&read)
        ),
    ] {
        let theirs = api.read(&parents_token, &path).ok().to_string();
        assert!(!theirs.contains(&principal), "{path}: {theirs}");
        let staffs = api.read(&principals_token, &path).ok().clone();
        assert!(staffs.to_string().contains(&principal), "{path}");
        let family = api.read(&parents_token, &path).ok().clone();
        assert_eq!(
            family["messages"][0]["author_id"],
            d.school.to_string(),
            "{path}"
        );
        assert_eq!(family["started_by"], d.school.to_string(), "{path}");
    }

    // A teacher brought into a school conversation (a parent conference) holds no
    // school inbox, so finds it in their own tab; the admin finds it in the school box,
    // where only the family's messages are unread, whoever of the staff wrote.
    let conference = Uuid::now_v7();
    d.by(
        d.principal,
        "StartConversation",
        json!({"conversation_id": conference, "school_id": d.school, "participant_ids": [d.parent, d.teacher], "body": "Conference on Monday?", "from": "school"}),
    )
    .ok();
    let teachers_own = d
        .by(
            d.teacher,
            "PostMessage",
            json!({"conversation_id": conference, "message_id": Uuid::now_v7(), "body": "I can do 4pm"}),
        )
        .ok()
        .clone();
    // The teacher wrote as himself, signed with his name: the family sees him among the
    // people of the conference; the principal, who wrote from the school, they do not.
    let conference_people = api
        .read(
            &parents_token,
            &format!("/v1/conversations/{conference}?{}", after(&teachers_own)),
        )
        .ok()["participants"]
        .clone();
    let people: Vec<&str> = conference_people
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["person_id"].as_str())
        .collect();
    assert!(
        people.contains(&d.teacher.to_string().as_str()),
        "{people:?}"
    );
    assert!(!people.contains(&principal.as_str()), "{people:?}");
    let in_box = |person: Uuid, tab: &str, at: &Value| -> Option<u64> {
        let token = api.token(&d.name, &person.to_string(), false);
        let inbox = api.read(&token, &format!("/v1/inbox?box={tab}&{}", after(at)));
        inbox.ok()["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["conversation_id"] == conference.to_string())
            .map(|c| c["unread_count"].as_u64().unwrap())
    };
    assert_eq!(
        in_box(d.teacher, "personal", &teachers_own),
        Some(1),
        "the school's question; not the teacher's own answer"
    );
    assert_eq!(in_box(d.principal, "personal", &teachers_own), None);
    assert_eq!(
        in_box(d.principal, "school", &teachers_own),
        Some(0),
        "nothing from the family yet"
    );
    let reply = d
        .by(
            d.parent,
            "PostMessage",
            json!({"conversation_id": conference, "message_id": Uuid::now_v7(), "body": "4pm works"}),
        )
        .ok()
        .clone();
    assert_eq!(in_box(d.principal, "school", &reply), Some(1));
    assert_eq!(
        in_box(d.teacher, "personal", &reply),
        Some(2),
        "to the teacher, both are news"
    );
}

/// A conversation holds at most 15 people, its starter included.
pub fn a_sixteenth_participant_is_refused(api: &Api) {
    let d = District::build(api, &district_name("ogdenville"));
    let staff: Vec<Uuid> = (0..15).map(|_| Uuid::now_v7()).collect();
    for (i, id) in staff.iter().enumerate() {
        d.staff(*id, &format!("Staff {i}"));
        // Staff take part in a school's conversations through a role there.
        d.system(
            "AssignRole",
            json!({"person_id": id, "role_id": "teacher", "school_id": d.school}),
        );
    }
    let start = |others: &[Uuid]| {
        d.by(
            d.principal,
            "StartConversation",
            json!({"conversation_id": Uuid::now_v7(), "school_id": d.school, "participant_ids": others, "body": "Staff meeting"}),
        )
    };
    let recorded = d.recorded();
    start(&staff).refused(422, "too_many_participants");
    assert_eq!(d.recorded(), recorded);
    start(&staff[..14]).ok();
}

/// A parent may start a conversation with a current teacher of their student only.
pub fn a_parent_starts_conversations_with_current_teachers_only(api: &Api) {
    let d = District::build(api, &district_name("brockway"));
    let start = |with: Uuid| {
        d.by(
            d.parent,
            "StartConversation",
            json!({"conversation_id": Uuid::now_v7(), "school_id": d.school, "participant_ids": [with], "body": "About Dennis"}),
        )
    };
    start(d.principal).refused(422, "not_a_current_teacher");
    start(d.teacher).ok();
}

/// A stopped conversation stays, but refuses replies.
pub fn a_stopped_conversation_refuses_replies(api: &Api) {
    let d = District::build(api, &district_name("cypress"));
    let conversation = Uuid::now_v7();
    d.by(
        d.teacher,
        "StartConversation",
        json!({"conversation_id": conversation, "school_id": d.school, "participant_ids": [d.parent], "body": "Field trip on Friday"}),
    )
    .ok();
    d.by(
        d.parent,
        "PostMessage",
        json!({"conversation_id": conversation, "message_id": Uuid::now_v7(), "body": "Thanks!"}),
    )
    .ok();
    d.by(
        d.teacher,
        "StopConversation",
        json!({"conversation_id": conversation}),
    )
    .ok();
    d.by(
        d.parent,
        "PostMessage",
        json!({"conversation_id": conversation, "message_id": Uuid::now_v7(), "body": "One more thing"}),
    )
    .refused(422, "conversation_stopped");
}

/// A stopped personal conversation refuses the family's replies until its staff member
/// writes again: `SendPersonalMessage` continues the one personal conversation of the
/// two, taking it up again, so a stop never bars a counselor from a family for good.
pub fn writing_again_takes_a_stopped_personal_conversation_up_again(api: &Api) {
    let d = District::build(api, &district_name("brockwayheights"));
    let first = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.parent, "body": "Dennis did well today"}),
        )
        .ok()
        .clone();
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    d.by(
        d.principal,
        "StopConversation",
        json!({"conversation_id": conversation}),
    )
    .ok();
    let reply = |body: &str| {
        d.by(
            d.parent,
            "PostMessage",
            json!({"conversation_id": conversation, "message_id": Uuid::now_v7(), "body": body}),
        )
    };
    reply("Thank you").refused(422, "conversation_stopped");

    let again = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.parent, "body": "A question about Friday"}),
        )
        .ok()
        .clone();
    assert_eq!(again["conversation_id"], conversation.as_str());
    let types: Vec<&str> = again["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["conversation_resumed", "message_posted"]);
    let answered = reply("Friday works").ok().clone();
    let principal = api.token(&d.name, &d.principal.to_string(), false);
    let thread = api.read(
        &principal,
        &format!("/v1/conversations/{conversation}?{}", after(&answered)),
    );
    let thread = thread.ok();
    assert_eq!(thread["stopped"], false);
    let bodies: Vec<&str> = thread["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            "Dennis did well today",
            "A question about Friday",
            "Friday works"
        ]
    );
}

/// The same Idempotency-Key with the same body answers the first result and records
/// one event; with another body it is 409.
pub fn retries_with_the_same_idempotency_key_record_one_event(api: &Api) {
    let d = District::build(api, &district_name("northhaverbrook"));
    let key = Uuid::now_v7();
    let body = json!({"recipient_id": d.teen, "body": "Don't forget your form"});
    let first = d.by_keyed(d.principal, "SendPersonalMessage", body.clone(), Some(key));
    let first = first.ok().clone();
    assert_eq!(first["command_id"], key.to_string());
    let recorded = d.recorded();
    for _ in 0..3 {
        let again = d.by_keyed(d.principal, "SendPersonalMessage", body.clone(), Some(key));
        assert_eq!(again.ok(), &first);
        assert!(again.replayed, "marked as a replay");
    }
    assert_eq!(d.recorded(), recorded, "nothing recorded by the retries");
    d.by_keyed(
        d.principal,
        "SendPersonalMessage",
        json!({"recipient_id": d.teen, "body": "Something else"}),
        Some(key),
    )
    .refused(409, "idempotency_key_reused");
    assert_eq!(d.recorded(), recorded);
}

/// Without an Idempotency-Key, a command retried under the ids the caller chose is the
/// same command (API.md): answered as done, recorded once; another command under the
/// same ids is 409 `already_exists`.
pub fn a_retry_under_the_callers_ids_records_once(api: &Api) {
    let d = District::build(api, &district_name("retry"));
    let conversation = Uuid::now_v7();
    let start = json!({"conversation_id": conversation, "school_id": d.school, "participant_ids": [d.parent], "body": "Field trip on Friday"});
    let first = d
        .by(d.principal, "StartConversation", start.clone())
        .ok()
        .clone();
    assert_eq!(first["events"].as_array().map(Vec::len), Some(2));
    let message = Uuid::now_v7();
    let post =
        json!({"conversation_id": conversation, "message_id": message, "body": "Bring a lunch"});
    d.by(d.principal, "PostMessage", post.clone()).ok();
    let recorded = d.recorded();
    let again = d.by(d.principal, "StartConversation", start).ok().clone();
    assert_eq!(again["events"], json!([]), "{again}");
    let again = d.by(d.principal, "PostMessage", post).ok().clone();
    assert_eq!(again["events"], json!([]), "{again}");
    assert_eq!(d.recorded(), recorded, "nothing recorded by the retries");
    d.by(
        d.principal,
        "PostMessage",
        json!({"conversation_id": conversation, "message_id": message, "body": "Bring two lunches"}),
    )
    .refused(409, "already_exists");
    d.by(
        d.principal,
        "StartConversation",
        json!({"conversation_id": conversation, "school_id": d.school, "participant_ids": [d.parent], "body": "Another topic"}),
    )
    .refused(409, "already_exists");
    assert_eq!(d.recorded(), recorded);
}

/// A token of district A cannot see or change district B: B's ids answer 404.
pub fn a_token_of_one_district_cannot_see_another(api: &Api) {
    let a = District::build(api, &district_name("a"));
    let b = District::build(api, &district_name("b"));
    let conversation = a
        .by(
            a.principal,
            "SendPersonalMessage",
            json!({"recipient_id": a.teen, "body": "Hi"}),
        )
        .ok()["conversation_id"]
        .clone();
    let recorded = (a.recorded(), b.recorded());
    b.by(
        b.principal,
        "SendPersonalMessage",
        json!({"recipient_id": a.teen, "body": "Hi"}),
    )
    .refused(404, "unknown_person");
    b.by(
        b.principal,
        "StopConversation",
        json!({"conversation_id": conversation}),
    )
    .refused(404, "unknown_conversation");
    api.command(
        &b.system_token(),
        "AssignRole",
        &json!({"person_id": a.principal, "role_id": "school_admin"}),
        None,
    )
    .refused(404, "unknown_person");
    // A's principal, with a token of B, is nobody there.
    let token = api.token(&b.name, &a.principal.to_string(), false);
    api.command(
        &token,
        "SendPersonalMessage",
        &json!({"recipient_id": b.teen, "body": "Hi"}),
        None,
    )
    .refused(404, "unknown_person");
    assert_eq!((a.recorded(), b.recorded()), recorded);
}

/// Malformed JSON, unknown fields, wrong types, unknown commands and missing tokens are
/// 4xx problem documents, and record nothing.
pub fn malformed_requests_record_nothing(api: &Api) {
    let d = District::build(api, &district_name("malformed"));
    let token = d.api.token(&d.name, &d.principal.to_string(), false);
    let recorded = d.recorded();
    let post = |token: &str, name: &str, body: &str| {
        api.try_post(
            token,
            &format!("/v1/commands/{name}"),
            "application/json",
            body,
            None,
        )
        .unwrap()
    };
    post(&token, "SendPersonalMessage", "{\"recipient_id\": ").refused(400, "validation");
    post(
        &token,
        "SendPersonalMessage",
        &json!({"recipient_id": d.teen, "body": "x", "bcc": "all"}).to_string(),
    )
    .refused(400, "validation");
    post(
        &token,
        "SendPersonalMessage",
        &json!({"recipient_id": d.teen, "body": 5}).to_string(),
    )
    .refused(400, "validation");
    // A key given twice: others may read the first, so it is refused, not last-wins.
    let twice = format!(
        r#"{{"recipient_id":"{}","recipient_id":"{}","body":"x"}}"#,
        d.child, d.parent
    );
    let refused = post(&token, "SendPersonalMessage", &twice);
    assert!(refused.text.contains("recipient_id"), "{}", refused.text);
    refused.refused(400, "validation");
    post(&token, "EditMessage", "{}").refused(404, "unknown_command");
    post("not-a-token", "SendPersonalMessage", "{}").refused(401, "unauthenticated");
    let huge = json!({"recipient_id": d.teen, "body": "x".repeat(100 * 1024)}).to_string();
    post(&token, "SendPersonalMessage", &huge).refused(413, "too_large");
    assert_eq!(d.recorded(), recorded);
}

/// Tokens from `homeroom token`, for a server started from the binary.
pub struct CliTokens {
    /// The `homeroom` binary.
    pub bin: PathBuf,
    /// The instance's data directory.
    pub data_dir: PathBuf,
}

impl Tokens for CliTokens {
    fn token(&self, district: &str, subject: &str, system: bool) -> String {
        let mut command = Command::new(&self.bin);
        command.args([
            "token",
            "--district",
            district,
            "--subject",
            subject,
            "--data-dir",
        ]);
        command.arg(&self.data_dir);
        if system {
            command.args(["--scope", "system"]);
        }
        let out = command.output().expect("homeroom token runs");
        assert!(
            out.status.success(),
            "homeroom token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("a token is text")
            .trim()
            .to_owned()
    }
}

/// A `homeroom serve` process on a data directory and a free port. Killed on drop.
pub struct Server {
    child: Option<Child>,
    /// The address it listens on.
    pub addr: String,
    /// Every line it printed on stdout, up to the listening line.
    pub banner: Vec<String>,
}

impl Server {
    /// Starts `bin serve --listen 127.0.0.1:0 --data-dir data_dir` and waits for its
    /// `listening on ADDR` line (bounded), then for `/readyz`.
    ///
    /// # Panics
    /// When it does not start within 60 s.
    pub fn start(bin: &Path, data_dir: &Path) -> Self {
        Self::start_with(bin, data_dir, &[])
    }

    /// Like [`Server::start`], with these environment variables set (settings such as
    /// `HOMEROOM_STORE`, `HOMEROOM_BUS`).
    ///
    /// # Panics
    /// When it does not start within 60 s.
    pub fn start_with(bin: &Path, data_dir: &Path, env: &[(&str, String)]) -> Self {
        Self::spawn(
            bin,
            &["serve", "--listen", "127.0.0.1:0"],
            data_dir,
            env,
            "listening on ",
        )
    }

    /// Starts `bin worker --data-dir data_dir` with `env` and waits for its first line.
    /// Its `addr` is empty.
    ///
    /// # Panics
    /// When it does not start within 60 s.
    pub fn start_worker(bin: &Path, data_dir: &Path, env: &[(&str, String)]) -> Self {
        Self::spawn(bin, &["worker"], data_dir, env, "homeroom worker")
    }

    fn spawn(
        bin: &Path,
        args: &[&str],
        data_dir: &Path,
        env: &[(&str, String)],
        ready: &str,
    ) -> Self {
        let mut command = Command::new(bin);
        command
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("homeroom starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Keep draining so the server never blocks on a full pipe.
                    continue;
                }
            }
        });
        let mut banner = Vec::new();
        let addr = loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    banner.push(line.clone());
                    if let Some(rest) = line.strip_prefix(ready) {
                        break if ready == "listening on " {
                            rest.trim().to_owned()
                        } else {
                            String::new()
                        };
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    panic!("no {ready:?} line from homeroom {args:?} ({e}); it printed {banner:?}");
                }
            }
        };
        Self {
            child: Some(child),
            addr,
            banner,
        }
    }

    /// Kills the process with SIGKILL (no chance to finish anything) and reaps it.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// An [`Api`] on this server with tokens from `homeroom token`.
    pub fn api(&self, bin: &Path, data_dir: &Path) -> Api {
        let api = Api::new(
            &self.addr,
            Box::new(CliTokens {
                bin: bin.to_owned(),
                data_dir: data_dir.to_owned(),
            }),
        );
        wait_ready(&api);
        api
    }

    /// The process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    ///
    /// # Panics
    /// When it has not exited within 60 s.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let mut child = self.child.take().expect("running");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("homeroom exits within 60 s of SIGTERM")
            .expect("waitpid")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `/readyz` until it answers 200 (bounded: 200 tries).
///
/// # Panics
/// When it never does.
pub fn wait_ready(api: &Api) {
    for _ in 0..200 {
        if api.try_get("/readyz").is_ok_and(|r| r.status == 200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("/readyz never answered 200");
}

/// The character counter shows the text a recipient would get, its channel, encoding and
/// segments, and refuses what sending would refuse.
pub fn the_character_counter_previews_a_personal_message(api: &Api) {
    let d = District::build(api, &district_name("counter"));
    let token = api.token(&d.name, &d.principal.to_string(), false);
    let preview = |recipient: Uuid, body: &str| {
        api.try_post(
            &token,
            "/v1/preview",
            "application/json",
            &json!({"recipient_id": recipient, "body": body}).to_string(),
            None,
        )
        .unwrap_or_else(|e| panic!("POST /v1/preview: {e}"))
    };
    let reply = preview(d.parent, "Hi {recipient_name}, {student_name}'s trip is 5€");
    let render = &reply.ok()["renders"][0];
    assert_eq!(
        render["recipient_id"],
        d.parent.to_string(),
        "{}",
        reply.text
    );
    assert_eq!(
        render["text"], "Hi Marge, Dennis's trip is 5€\n- Principal Skinner",
        "as it goes out: signed with the sender's name"
    );
    assert_eq!(render["channel"], "sms");
    assert_eq!(render["encoding"], "GSM-7");
    assert_eq!(render["segments"], 1);
    let long = preview(d.teen, &"Ω".repeat(71));
    let render = &long.ok()["renders"][0];
    assert_eq!(
        (&render["encoding"], &render["segments"]),
        (&json!("GSM-7"), &json!(1)),
        "Ω is GSM-7: {}",
        long.text
    );
    let ucs2 = preview(d.teen, &"ω".repeat(71));
    let render = &ucs2.ok()["renders"][0];
    assert_eq!(
        (&render["encoding"], &render["segments"]),
        (&json!("UCS-2"), &json!(2)),
        "{}",
        ucs2.text
    );
    preview(d.child, "Hi").refused(422, "recipient_too_young");
    preview(d.parent, "Hi {studnet_name}").refused(400, "validation");
    preview(Uuid::now_v7(), "Hi").refused(404, "unknown_person");
}

/// One block of a server-sent event stream.
struct StreamEvent {
    event: String,
    id: String,
    data: Value,
}

/// A blocking reader of `GET /v1/stream`.
struct EventStream(BufReader<ureq::BodyReader<'static>>);

impl EventStream {
    fn open(api: &Api, token: &str, last_event_id: Option<&str>) -> Self {
        let mut request = api
            .agent
            .get(format!("{}/v1/stream", api.base))
            .header("Authorization", &format!("Bearer {token}"))
            .header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request
            .call()
            .unwrap_or_else(|e| panic!("GET /v1/stream: {e}"));
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        Self(BufReader::new(response.into_body().into_reader()))
    }

    /// The next event named `kind`, passing over keep-alives and other events.
    fn next(&mut self, kind: &str) -> StreamEvent {
        let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
        loop {
            let mut line = String::new();
            let read = self.0.read_line(&mut line).expect("the stream reads");
            assert!(read > 0, "the stream ended before a {kind} event");
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if event == kind {
                    let data = serde_json::from_str(&data).expect("event data is JSON");
                    return StreamEvent { event, id, data };
                }
                (event, id, data) = (String::new(), String::new(), String::new());
            } else if let Some(value) = line.strip_prefix("event:") {
                event = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("id:") {
                id = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.trim_start());
            }
        }
    }
}

/// The event stream tells a participant of a message posted after they connected, and a
/// client that reconnects with `Last-Event-ID` is told what it missed.
pub fn the_event_stream_tells_of_new_messages_and_resumes(api: &Api) {
    let d = District::build(api, &district_name("live"));
    let parent = api.token(&d.name, &d.parent.to_string(), false);
    let mut stream = EventStream::open(api, &parent, None);
    stream.next("ready");

    let sent = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.parent, "body": "Picture day tomorrow"}),
        )
        .ok()
        .clone();
    let told = stream.next("message");
    assert_eq!(told.event, "message");
    assert_eq!(told.data["message_id"], sent["message_id"]);
    assert_eq!(told.data["conversation_id"], sent["conversation_id"]);
    assert_eq!(told.data["author_id"], d.principal.to_string());
    assert_eq!(
        told.id,
        position_text(&sent["position"]),
        "the event id is the position"
    );
    drop(stream);

    let missed = d
        .by(
            d.principal,
            "SendPersonalMessage",
            json!({"recipient_id": d.parent, "body": "Bring a comb"}),
        )
        .ok()
        .clone();
    let mut back = EventStream::open(api, &parent, Some(&told.id));
    let again = back.next("message");
    assert_eq!(
        again.data["message_id"], missed["message_id"],
        "nothing missed"
    );
}
