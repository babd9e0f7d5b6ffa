//! Permissions and roles. A person holds permissions only through roles, each assigned
//! for one school or district-wide; built-in roles have fixed permissions, custom ones
//! any subset.

use serde::{Deserialize, Serialize};

use crate::ids::RoleId;

/// One thing a role allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Send and receive 1:1 messages from one's own identity.
    PersonalMessages,
    /// Send "From: School" and see the school's shared inbox.
    SchoolInbox,
    /// See every conversation of the school (or district), personal ones included.
    Oversight,
    /// See the messages logged on a student's record.
    StudentRecord,
    /// See inbound replies on a student's record.
    InboundReplies,
    /// Run directory commands (register people, assign roles, …).
    RolesAdmin,
}

impl Permission {
    /// Every permission, in a fixed order (used for bit positions and listings).
    pub const ALL: [Permission; 6] = [
        Permission::PersonalMessages,
        Permission::SchoolInbox,
        Permission::Oversight,
        Permission::StudentRecord,
        Permission::InboundReplies,
        Permission::RolesAdmin,
    ];

    /// The permission's name as the API spells it (`personal_messages`).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::PersonalMessages => "personal_messages",
            Permission::SchoolInbox => "school_inbox",
            Permission::Oversight => "oversight",
            Permission::StudentRecord => "student_record",
            Permission::InboundReplies => "inbound_replies",
            Permission::RolesAdmin => "roles_admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of permissions; serialised as an array of names so stored roles stay readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(from = "Vec<Permission>", into = "Vec<Permission>")]
pub struct PermissionSet(u8);

impl PermissionSet {
    /// No permission at all (`school_viewer`, `teacher`).
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Every permission (`district_admin`).
    pub fn all() -> Self {
        Permission::ALL.into_iter().collect()
    }

    /// Whether `permission` is in the set.
    pub fn contains(self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }

    /// Adds `permission`.
    pub fn insert(&mut self, permission: Permission) {
        self.0 |= permission.bit();
    }

    /// The permissions in either set: what a person holds through several roles.
    pub fn union(self, other: PermissionSet) -> PermissionSet {
        Self(self.0 | other.0)
    }

    /// Whether the set holds nothing.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The permissions in the set, in [`Permission::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut set = PermissionSet::empty();
        for permission in iter {
            set.insert(permission);
        }
        set
    }
}

impl From<Vec<Permission>> for PermissionSet {
    fn from(list: Vec<Permission>) -> Self {
        list.into_iter().collect()
    }
}

impl From<PermissionSet> for Vec<Permission> {
    fn from(set: PermissionSet) -> Self {
        set.iter().collect()
    }
}

/// A role: a name and the permissions it grants wherever it is assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDefinition {
    /// The role's id.
    pub id: RoleId,
    /// A human name for admin screens.
    pub name: String,
    /// What it grants.
    pub permissions: PermissionSet,
}

/// The ids of the built-in roles, which custom roles may not reuse.
pub const BUILTIN_ROLE_IDS: &[&str] = &[
    "school_admin",
    "technical_school_admin",
    "school_viewer",
    "teacher",
    "district_admin",
];

/// The built-in role with this id, if it is one.
///
/// `teacher` grants no permission: what a teacher may do comes from being a student's
/// current teacher (`SetStudentTeachers`), checked by the conversation rules.
pub fn builtin_role(id: &RoleId) -> Option<RoleDefinition> {
    use Permission::*;
    let (name, permissions): (&str, &[Permission]) = match id.as_str() {
        "school_admin" => (
            "School Admin",
            &[
                PersonalMessages,
                SchoolInbox,
                Oversight,
                StudentRecord,
                InboundReplies,
            ],
        ),
        "technical_school_admin" => (
            "Technical School Admin",
            &[SchoolInbox, Oversight, RolesAdmin],
        ),
        "school_viewer" => ("School Viewer", &[]),
        "teacher" => ("Teacher", &[]),
        "district_admin" => ("District Admin", &Permission::ALL),
        _ => return None,
    };
    Some(RoleDefinition {
        id: id.clone(),
        name: name.to_owned(),
        permissions: permissions.iter().copied().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(id: &str) -> PermissionSet {
        builtin_role(&RoleId::parse(id).unwrap())
            .unwrap()
            .permissions
    }

    #[test]
    fn school_admin_has_personal_messages_school_inbox_and_oversight() {
        let p = role("school_admin");
        assert!(p.contains(Permission::PersonalMessages));
        assert!(p.contains(Permission::SchoolInbox));
        assert!(p.contains(Permission::Oversight));
        assert!(!p.contains(Permission::RolesAdmin));
    }

    #[test]
    fn technical_school_admin_has_personal_messages_off() {
        let p = role("technical_school_admin");
        assert!(!p.contains(Permission::PersonalMessages));
        assert!(p.contains(Permission::RolesAdmin));
    }

    #[test]
    fn school_viewer_and_teacher_grant_nothing_by_themselves() {
        assert!(role("school_viewer").is_empty());
        assert!(role("teacher").is_empty());
    }

    #[test]
    fn district_admin_holds_every_permission() {
        assert_eq!(role("district_admin"), PermissionSet::all());
    }

    #[test]
    fn every_builtin_id_is_a_builtin_role() {
        for id in BUILTIN_ROLE_IDS {
            assert!(builtin_role(&RoleId::parse(id).unwrap()).is_some());
        }
        assert!(builtin_role(&RoleId::parse("counsellor").unwrap()).is_none());
    }

    #[test]
    fn a_permissions_name_is_its_api_spelling() {
        for permission in Permission::ALL {
            assert_eq!(
                serde_json::to_value(permission).unwrap(),
                serde_json::Value::from(permission.as_str())
            );
        }
    }

    #[test]
    fn permission_sets_round_trip_through_lists() {
        let set: PermissionSet = vec![Permission::Oversight, Permission::Oversight].into();
        let list: Vec<Permission> = set.into();
        assert_eq!(list, vec![Permission::Oversight]);
        assert_eq!(set.union(PermissionSet::empty()), set);
    }
}
