//! Key-range permissions as etcd evaluates them (`range_perm_cache.go`):
//! each user's read and write grants, the union over all its roles, kept
//! as sorted, merged half-open byte intervals. A single key is allowed
//! when a grant contains it; a range only when the grants cover all of it
//! without a gap.

use crate::core::auth::pb::authpb::{permission::Type, Permission, Role, User};

/// The role whose holders may do anything (etcd's `root`).
pub const ROOT: &str = "root";

/// Half-open byte intervals `[start, end)`, `end = None` meaning no upper
/// bound; sorted by start, overlapping and touching ones merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntervalSet {
    spans: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl IntervalSet {
    /// Adds `[start, end)`.
    pub fn add(&mut self, start: Vec<u8>, end: Option<Vec<u8>>) {
        if let Some(e) = &end {
            if e.as_slice() <= start.as_slice() {
                return;
            }
        }
        self.spans.push((start, end));
        self.spans.sort_by(|a, b| a.0.cmp(&b.0));
        let mut merged: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(self.spans.len());
        for (s, e) in std::mem::take(&mut self.spans) {
            if let Some(last) = merged.last_mut() {
                let touches = match &last.1 {
                    None => true,
                    Some(le) => s.as_slice() <= le.as_slice(),
                };
                if touches {
                    last.1 = match (&last.1, e) {
                        (None, _) | (_, None) => None,
                        (Some(le), Some(e)) => Some(if e > *le { e } else { le.clone() }),
                    };
                    continue;
                }
            }
            merged.push((s, e));
        }
        self.spans = merged;
    }

    /// Whether `key` lies in a span.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.spans
            .iter()
            .any(|(s, e)| s.as_slice() <= key && e.as_ref().is_none_or(|e| key < e.as_slice()))
    }

    /// Whether one span covers all of `[start, end)` (`end = None`: to the
    /// end of the keyspace). Spans are merged, so a gap-free cover is one span.
    pub fn covers(&self, start: &[u8], end: Option<&[u8]>) -> bool {
        self.spans.iter().any(|(s, e)| {
            s.as_slice() <= start
                && match (e, end) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(e), Some(end)) => end <= e.as_slice(),
                }
        })
    }
}

/// What a request needs on a key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Range, watch, compare, `prev_kv`.
    Read,
    /// Put, delete, lease attach and revoke.
    Write,
}

/// One user's rights, built from its roles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPerms {
    /// Holds the role `root`: every key check passes, admin RPCs allowed.
    pub root: bool,
    /// Where it may read.
    pub read: IntervalSet,
    /// Where it may write.
    pub write: IntervalSet,
}

/// The interval of a granted permission: an empty `range_end` is the key
/// alone, `"\0"` is open-ended (etcd's encoding).
fn grant_interval(p: &Permission) -> (Vec<u8>, Option<Vec<u8>>) {
    match p.range_end.as_slice() {
        [] => {
            let mut end = p.key.clone();
            end.push(0);
            (p.key.clone(), Some(end))
        }
        [0] => (p.key.clone(), None),
        end => (p.key.clone(), Some(end.to_vec())),
    }
}

impl UserPerms {
    /// The rights of `user` given every role; roles that do not exist add
    /// nothing (etcd skips them).
    pub fn of(user: &User, roles: &std::collections::HashMap<String, Role>) -> Self {
        let mut perms = Self {
            root: user.roles.iter().any(|r| r == ROOT),
            ..Self::default()
        };
        for name in &user.roles {
            let Some(role) = roles.get(name) else {
                continue;
            };
            for p in &role.key_permission {
                let (start, end) = grant_interval(p);
                let kind = Type::try_from(p.perm_type).unwrap_or(Type::Read);
                if matches!(kind, Type::Read | Type::Readwrite) {
                    perms.read.add(start.clone(), end.clone());
                }
                if matches!(kind, Type::Write | Type::Readwrite) {
                    perms.write.add(start, end);
                }
            }
        }
        perms
    }

    /// Whether `access` on `[key, range_end)` is allowed: an empty
    /// `range_end` asks for the key alone, `"\0"` for everything from
    /// `key` on (matches etcd's `isRangeOpPermitted`, checked with the
    /// range end as the client sent it, so a from-key watch needs an
    /// open-ended grant: the GHSA-xg4h fix).
    pub fn allows(&self, access: Access, key: &[u8], range_end: &[u8]) -> bool {
        if self.root {
            return true;
        }
        let set = match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        };
        match range_end {
            [] => set.contains(key),
            [0] => set.covers(key, None),
            end if end <= key => set.contains(key),
            end => set.covers(key, Some(end)),
        }
    }
}

/// Whether a grant's range is one etcd accepts (`isValidPermissionRange`):
/// a key, and a range end that is empty, `"\0"`, or after the key.
pub fn valid_grant(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || range_end == [0] || key < range_end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn perm(kind: Type, key: &str, end: &[u8]) -> Permission {
        Permission {
            perm_type: kind as i32,
            key: key.as_bytes().to_vec(),
            range_end: end.to_vec(),
        }
    }

    fn user_with(perms: Vec<Permission>) -> UserPerms {
        let role = Role {
            name: b"r".to_vec(),
            key_permission: perms,
        };
        let user = User {
            name: b"u".to_vec(),
            roles: vec!["r".to_string(), "missing".to_string()],
            ..User::default()
        };
        UserPerms::of(&user, &HashMap::from([("r".to_string(), role)]))
    }

    #[test]
    fn prefix_grants_cover_their_prefix_only() {
        // etcd's live example: rw on prefix foo, read on prefix ro/.
        let u = user_with(vec![
            perm(Type::Readwrite, "foo", b"fop"),
            perm(Type::Read, "ro/", b"ro0"),
        ]);
        assert!(u.allows(Access::Read, b"foo", b"fop"));
        assert!(u.allows(Access::Read, b"foo1", b""));
        assert!(u.allows(Access::Write, b"foo", b""));
        assert!(!u.allows(Access::Read, b"fon", b"foq"));
        assert!(!u.allows(Access::Read, b"foo", &[0]));
        assert!(!u.allows(Access::Read, &[0], &[0]));
        assert!(u.allows(Access::Read, b"ro/x", b""));
        assert!(!u.allows(Access::Write, b"ro/x", b""));
    }

    #[test]
    fn a_from_key_watch_needs_an_open_ended_grant() {
        // GHSA-xg4h: read on one key must not open everything after it.
        let u = user_with(vec![perm(Type::Read, "a", b"")]);
        assert!(u.allows(Access::Read, b"a", b""));
        assert!(!u.allows(Access::Read, b"a", &[0]));
        let open = user_with(vec![perm(Type::Read, "a", &[0])]);
        assert!(open.allows(Access::Read, b"a", &[0]));
        assert!(open.allows(Access::Read, b"zzz", b""));
    }

    #[test]
    fn adjacent_grants_merge_into_one_cover() {
        let u = user_with(vec![
            perm(Type::Read, "a", b"c"),
            perm(Type::Read, "c", b"e"),
            perm(Type::Read, "g", b"h"),
        ]);
        assert!(u.allows(Access::Read, b"a", b"e"));
        assert!(!u.allows(Access::Read, b"a", b"h"));
        assert!(!u.allows(Access::Read, b"f", b""));
    }

    #[test]
    fn root_may_do_anything_and_no_roles_nothing() {
        let root = UserPerms::of(
            &User {
                roles: vec![ROOT.to_string()],
                ..User::default()
            },
            &HashMap::new(),
        );
        assert!(root.allows(Access::Write, &[0], &[0]));
        let nobody = UserPerms::of(&User::default(), &HashMap::new());
        assert!(!nobody.allows(Access::Read, b"k", b""));
    }

    #[test]
    fn grants_are_validated_as_etcd_validates_them() {
        assert!(valid_grant(b"k", b""));
        assert!(valid_grant(b"k", &[0]));
        assert!(valid_grant(b"k", b"l"));
        assert!(!valid_grant(b"k9", b"k3"));
        assert!(!valid_grant(b"", b""));
    }
}
