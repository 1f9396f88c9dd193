//! The auth operations as every member applies them from the Raft log,
//! with etcd's checks, errors and revision rules (`server/auth/store.go`):
//! the caller's admin right is checked again here against the state the
//! entry applies to; every change but `AuthEnable`, `Authenticate` and a
//! role grant the user already holds bumps the auth revision.

use fjall::Readable;
use prost::Message as _;

use crate::core::auth::pb::authpb::{Permission, Role, User, UserAddOptions};
use crate::core::auth::pb::etcdserverpb::{
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest,
};
use crate::core::auth::{flags, perms, role_key, user_key, KEY_ENABLED, KEY_REVISION, ROOT};
use crate::core::errors::EtcdError;
use crate::core::storage::Storage;

type Tx<'a> = fjall::SingleWriterWriteTx<'a>;

/// One auth operation from the Raft log.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthOp {
    /// `AuthEnable`.
    Enable,
    /// `AuthDisable`.
    Disable,
    /// `Authenticate`, the password already checked by the proposer; the
    /// token is `<prefix>.<entry index>`.
    Authenticate {
        /// The user.
        name: String,
        /// 16 random letters chosen by the proposer.
        prefix: String,
    },
    /// `UserAdd` (with the bcrypt hash, never the password).
    UserAdd(AuthUserAddRequest),
    /// `UserDelete`.
    UserDelete(String),
    /// `UserChangePassword` (with the bcrypt hash).
    UserChangePassword(AuthUserChangePasswordRequest),
    /// `UserGrantRole`.
    UserGrantRole(AuthUserGrantRoleRequest),
    /// `UserRevokeRole`.
    UserRevokeRole(AuthUserRevokeRoleRequest),
    /// `RoleAdd`.
    RoleAdd(String),
    /// `RoleDelete`.
    RoleDelete(String),
    /// `RoleGrantPermission`.
    RoleGrantPermission(AuthRoleGrantPermissionRequest),
    /// `RoleRevokePermission`.
    RoleRevokePermission(AuthRoleRevokePermissionRequest),
}

/// What the member does once the entry is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthEffect {
    /// Nothing.
    None,
    /// Register a simple token.
    Assign {
        /// The token.
        token: String,
        /// Its user.
        user: String,
    },
    /// Forget a user's tokens.
    DropUser(String),
    /// Forget every token.
    Clear,
}

/// Applies `op` for `caller` (the user the proposer resolved) inside `tx`.
/// `index` is the entry's Raft index. Returns the token of an
/// `Authenticate` (or `None`) and what to do after the commit.
///
/// # Errors
/// etcd's auth errors; nothing is written then.
pub fn apply(
    tx: &mut Tx<'_>,
    s: &Storage,
    op: &AuthOp,
    caller: &str,
    index: u64,
) -> Result<(Option<String>, AuthEffect), EtcdError> {
    let (enabled, revision) = flags(&*tx, s)?;
    if !matches!(op, AuthOp::Authenticate { .. }) && enabled {
        admin(tx, s, caller)?;
    }
    let bump = |tx: &mut Tx<'_>| tx.insert(&s.auth, KEY_REVISION, (revision + 1).to_be_bytes());
    let effect = match op {
        AuthOp::Enable => {
            if !enabled {
                let root = user(tx, s, ROOT)?.ok_or(EtcdError::RootUserNotExist)?;
                if !root.roles.iter().any(|r| r == ROOT) {
                    return Err(EtcdError::RootRoleNotExist);
                }
                tx.insert(&s.auth, KEY_ENABLED, [1u8]);
                if tx.get(&s.auth, KEY_REVISION)?.is_none() {
                    tx.insert(&s.auth, KEY_REVISION, revision.to_be_bytes());
                }
            }
            AuthEffect::None
        }
        AuthOp::Disable => {
            if !enabled {
                return Ok((None, AuthEffect::None));
            }
            tx.insert(&s.auth, KEY_ENABLED, [0u8]);
            bump(tx);
            AuthEffect::Clear
        }
        AuthOp::Authenticate { name, prefix } => {
            match user(tx, s, name)? {
                Some(u) if !no_password(&u) => {}
                _ => return Err(EtcdError::AuthFailed),
            }
            let token = format!("{prefix}.{index}");
            return Ok((
                Some(token.clone()),
                AuthEffect::Assign {
                    token,
                    user: name.clone(),
                },
            ));
        }
        AuthOp::UserAdd(r) => {
            if r.name.is_empty() {
                return Err(EtcdError::UserEmpty);
            }
            if user(tx, s, &r.name)?.is_some() {
                return Err(EtcdError::UserAlreadyExist);
            }
            let no_pw = r.options.as_ref().is_some_and(|o| o.no_password);
            let record = User {
                name: r.name.as_bytes().to_vec(),
                password: if no_pw {
                    Vec::new()
                } else {
                    hash_of(&r.hashed_password)?
                },
                roles: Vec::new(),
                options: Some(UserAddOptions { no_password: no_pw }),
            };
            put_user(tx, s, &record);
            bump(tx);
            AuthEffect::None
        }
        AuthOp::UserDelete(name) => {
            if enabled && name == ROOT {
                return Err(EtcdError::InvalidAuthMgmt);
            }
            if user(tx, s, name)?.is_none() {
                return Err(EtcdError::UserNotFound);
            }
            tx.remove(&s.auth, user_key(name));
            bump(tx);
            AuthEffect::DropUser(name.clone())
        }
        AuthOp::UserChangePassword(r) => {
            let mut record = user(tx, s, &r.name)?.ok_or(EtcdError::UserNotFound)?;
            if !no_password(&record) {
                record.password = hash_of(&r.hashed_password)?;
                put_user(tx, s, &record);
            }
            bump(tx);
            AuthEffect::DropUser(r.name.clone())
        }
        AuthOp::UserGrantRole(r) => {
            let mut record = user(tx, s, &r.user)?.ok_or(EtcdError::UserNotFound)?;
            // etcd never looks the role root up: granting it makes an admin.
            if r.role != ROOT && role(tx, s, &r.role)?.is_none() {
                return Err(EtcdError::RoleNotFound);
            }
            if let Err(at) = record.roles.binary_search(&r.role) {
                record.roles.insert(at, r.role.clone());
                put_user(tx, s, &record);
                bump(tx);
            }
            AuthEffect::None
        }
        AuthOp::UserRevokeRole(r) => {
            if enabled && r.name == ROOT && r.role == ROOT {
                return Err(EtcdError::InvalidAuthMgmt);
            }
            let mut record = user(tx, s, &r.name)?.ok_or(EtcdError::UserNotFound)?;
            let before = record.roles.len();
            record.roles.retain(|x| x != &r.role);
            if record.roles.len() == before {
                return Err(EtcdError::RoleNotGranted);
            }
            put_user(tx, s, &record);
            bump(tx);
            AuthEffect::None
        }
        AuthOp::RoleAdd(name) => {
            if name.is_empty() {
                return Err(EtcdError::RoleEmpty);
            }
            if role(tx, s, name)?.is_some() {
                return Err(EtcdError::RoleAlreadyExist);
            }
            put_role(
                tx,
                s,
                &Role {
                    name: name.as_bytes().to_vec(),
                    key_permission: Vec::new(),
                },
            );
            bump(tx);
            AuthEffect::None
        }
        AuthOp::RoleDelete(name) => {
            if enabled && name == ROOT {
                return Err(EtcdError::InvalidAuthMgmt);
            }
            if role(tx, s, name)?.is_none() {
                return Err(EtcdError::RoleNotFound);
            }
            tx.remove(&s.auth, role_key(name));
            let holders: Vec<User> = users(tx, s)?
                .into_iter()
                .filter(|u| u.roles.contains(name))
                .collect();
            for mut u in holders {
                u.roles.retain(|r| r != name);
                put_user(tx, s, &u);
            }
            bump(tx);
            AuthEffect::None
        }
        AuthOp::RoleGrantPermission(r) => {
            let perm: &Permission = r.perm.as_ref().ok_or(EtcdError::PermissionNotGiven)?;
            if !perms::valid_grant(&perm.key, &perm.range_end) {
                return Err(EtcdError::InvalidAuthMgmt);
            }
            let mut record = role(tx, s, &r.name)?.ok_or(EtcdError::RoleNotFound)?;
            match record
                .key_permission
                .iter_mut()
                .find(|p| p.key == perm.key && p.range_end == perm.range_end)
            {
                Some(same) => same.perm_type = perm.perm_type,
                None => {
                    record.key_permission.push(perm.clone());
                    record.key_permission.sort_by(|a, b| a.key.cmp(&b.key));
                }
            }
            put_role(tx, s, &record);
            bump(tx);
            AuthEffect::None
        }
        AuthOp::RoleRevokePermission(r) => {
            let mut record = role(tx, s, &r.role)?.ok_or(EtcdError::RoleNotFound)?;
            let before = record.key_permission.len();
            record
                .key_permission
                .retain(|p| !(p.key == r.key && p.range_end == r.range_end));
            if record.key_permission.len() == before {
                return Err(EtcdError::PermissionNotGranted);
            }
            put_role(tx, s, &record);
            bump(tx);
            AuthEffect::None
        }
    };
    Ok((None, effect))
}

/// etcd's `IsAdminPermitted` against the state being applied to.
fn admin(tx: &Tx<'_>, s: &Storage, caller: &str) -> Result<(), EtcdError> {
    if caller.is_empty() {
        return Err(EtcdError::UserEmpty);
    }
    match user(tx, s, caller)? {
        None => Err(EtcdError::UserNotFound),
        Some(u) if u.roles.iter().any(|r| r == ROOT) => Ok(()),
        Some(_) => Err(EtcdError::PermissionDenied),
    }
}

fn no_password(u: &User) -> bool {
    u.options.as_ref().is_some_and(|o| o.no_password)
}

/// The stored hash: the proposer's bcrypt text, checked for its shape so
/// that no entry can store something `bcrypt::verify` would choke on.
fn hash_of(hashed: &str) -> Result<Vec<u8>, EtcdError> {
    if hashed.starts_with("$2") && hashed.len() == 60 {
        Ok(hashed.as_bytes().to_vec())
    } else {
        Err(EtcdError::AuthFailed)
    }
}

fn decode<T: prost::Message + Default>(v: &[u8]) -> Result<T, EtcdError> {
    T::decode(v).map_err(|e| EtcdError::Internal(format!("auth record: {e}")))
}

fn user<R: Readable>(r: &R, s: &Storage, name: &str) -> Result<Option<User>, EtcdError> {
    r.get(&s.auth, user_key(name))?
        .map(|v| decode(v.as_ref()))
        .transpose()
}

fn role<R: Readable>(r: &R, s: &Storage, name: &str) -> Result<Option<Role>, EtcdError> {
    r.get(&s.auth, role_key(name))?
        .map(|v| decode(v.as_ref()))
        .transpose()
}

fn users<R: Readable>(r: &R, s: &Storage) -> Result<Vec<User>, EtcdError> {
    let mut out = Vec::new();
    for item in r.prefix(&s.auth, crate::core::auth::USER_PREFIX) {
        let (_, v) = item.into_inner()?;
        out.push(decode(v.as_ref())?);
    }
    Ok(out)
}

fn put_user(tx: &mut Tx<'_>, s: &Storage, u: &User) {
    tx.insert(
        &s.auth,
        user_key(&String::from_utf8_lossy(&u.name)),
        u.encode_to_vec(),
    );
}

fn put_role(tx: &mut Tx<'_>, s: &Storage, r: &Role) {
    tx.insert(
        &s.auth,
        role_key(&String::from_utf8_lossy(&r.name)),
        r.encode_to_vec(),
    );
}
