//! `user`, `role` and `auth`: etcdctl 3.4's commands, arguments, prompts,
//! output and exit codes for users, roles and enabling auth.

use clap::{ArgAction, Subcommand};
use etcd_client::{Permission, PermissionType, RoleRevokePermissionOptions, UserAddOptions};

use super::{Ctx, Failure};
use crate::modes::common::output::auth as out;
use crate::modes::ExitCode;

/// `user` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Adds a new user
    Add {
        /// NAME or NAME:PASSWORD
        name: Option<String>,
        /// Read the password from stdin instead of prompting
        #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
        interactive: bool,
        /// The new user's password
        #[arg(long, value_name = "PASSWORD")]
        new_user_password: Option<String>,
        /// A user without password (certificate login only)
        #[arg(long)]
        no_password: bool,
    },
    /// Deletes a user
    Delete {
        /// The user
        name: Option<String>,
    },
    /// Gets detailed information of a user
    Get {
        /// The user
        name: Option<String>,
        /// Show permissions of roles granted to the user
        #[arg(long)]
        detail: bool,
    },
    /// Lists all users
    List,
    /// Changes password of user
    Passwd {
        /// The user
        name: Option<String>,
        /// Read the password from stdin instead of prompting
        #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
        interactive: bool,
    },
    /// Grants a role to a user
    GrantRole {
        /// The user
        user: Option<String>,
        /// The role
        role: Option<String>,
    },
    /// Revokes a role from a user
    RevokeRole {
        /// The user
        user: Option<String>,
        /// The role
        role: Option<String>,
    },
}

/// `role` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum RoleCommand {
    /// Adds a new role
    Add {
        /// The role
        name: Option<String>,
    },
    /// Deletes a role
    Delete {
        /// The role
        name: Option<String>,
    },
    /// Gets detailed information of a role
    Get {
        /// The role
        name: Option<String>,
    },
    /// Lists all roles
    List,
    /// Grants a key to a role
    GrantPermission {
        /// ROLE read|write|readwrite KEY [END]
        args: Vec<String>,
        /// Grant a prefix permission
        #[arg(long)]
        prefix: bool,
        /// Grant a permission of keys that are greater than or equal to the given key
        #[arg(long)]
        from_key: bool,
    },
    /// Revokes a key from a role
    RevokePermission {
        /// ROLE KEY [END]
        args: Vec<String>,
        /// Revoke a prefix permission
        #[arg(long)]
        prefix: bool,
        /// Revoke a permission of keys that are greater than or equal to the given key
        #[arg(long)]
        from_key: bool,
    },
}

/// `auth` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum AuthCommand {
    /// Enables authentication
    Enable,
    /// Disables authentication
    Disable,
}

fn bad(message: impl Into<String>) -> Failure {
    Failure::new(ExitCode::BAD_ARGS, message)
}

fn one(arg: Option<String>, message: &str) -> Result<String, Failure> {
    arg.ok_or_else(|| bad(message))
}

/// A password as etcdctl reads one: prompted twice on a terminal, or one
/// word from stdin with `--interactive=false`.
fn read_password(name: &str, interactive: bool) -> Result<String, Failure> {
    if !interactive {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        return Ok(line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string());
    }
    let prompt = |text: String| {
        rpassword::prompt_password(text).map_err(|e| Failure::new(ExitCode::ERROR, e.to_string()))
    };
    let first = prompt(format!("Password of {name}: "))?;
    if first.is_empty() {
        return Err(bad("empty password"));
    }
    let again = prompt(format!("Type password of {name} again for confirmation: "))?;
    if first != again {
        return Err(bad("given passwords are different"));
    }
    Ok(first)
}

/// Runs one `user` subcommand.
pub async fn user(ctx: &Ctx, command: UserCommand) -> Result<(), Failure> {
    let f = ctx.printer.format();
    match command {
        UserCommand::Add {
            name,
            interactive,
            new_user_password,
            no_password,
        } => {
            let arg = one(name, "user add command requires user name as its argument")?;
            let (name, password) = if no_password {
                (arg, String::new())
            } else if let Some(p) = new_user_password {
                (arg, p)
            } else if let Some((n, p)) = arg.split_once(':') {
                (n.to_string(), p.to_string())
            } else {
                let p = read_password(&arg, interactive)?;
                (arg, p)
            };
            if name.is_empty() {
                return Err(bad("empty user name is not allowed"));
            }
            let options = no_password.then(|| UserAddOptions::new().with_no_pwd());
            let mut c = ctx.connect().await?;
            let r = c
                .user_add(name.clone(), password, options)
                .await
                .map_err(|e| ctx.failed(e))?;
            ctx.print(out::changed(f, &format!("User {name} created"), r.header()))
        }
        UserCommand::Delete { name } => {
            let name = one(
                name,
                "user delete command requires user name as its argument",
            )?;
            let mut c = ctx.connect().await?;
            let r = c
                .user_delete(name.clone())
                .await
                .map_err(|e| ctx.failed(e))?;
            ctx.print(out::changed(f, &format!("User {name} deleted"), r.header()))
        }
        UserCommand::Get { name, detail } => {
            let name = one(name, "user get command requires user name as its argument")?;
            let mut c = ctx.connect().await?;
            let r = c.user_get(name.clone()).await.map_err(|e| ctx.failed(e))?;
            if !detail {
                return ctx.print(out::user_get(f, &name, &r));
            }
            println!("User: {name}");
            for role in r.roles() {
                println!();
                let rr = c.role_get(role.clone()).await.map_err(|e| ctx.failed(e))?;
                ctx.print(out::role_get(f, role, &rr))?;
            }
            Ok(())
        }
        UserCommand::List => {
            let mut c = ctx.connect().await?;
            let r = c.user_list().await.map_err(|e| ctx.failed(e))?;
            ctx.print(out::user_list(f, &r))
        }
        UserCommand::Passwd { name, interactive } => {
            let name = one(
                name,
                "user passwd command requires user name as its argument",
            )?;
            let password = read_password(&name, interactive)?;
            let mut c = ctx.connect().await?;
            let r = c
                .user_change_password(name, password)
                .await
                .map_err(|e| ctx.failed(e))?;
            ctx.print(out::changed(f, "Password updated", r.header()))
        }
        UserCommand::GrantRole { user, role } => {
            let message = "user grant command requires user name and role name as its argument";
            let (user, role) = (one(user, message)?, one(role, message)?);
            let mut c = ctx.connect().await?;
            let r = c
                .user_grant_role(user.clone(), role.clone())
                .await
                .map_err(|e| ctx.failed(e))?;
            let line = format!("Role {role} is granted to user {user}");
            ctx.print(out::changed(f, &line, r.header()))
        }
        UserCommand::RevokeRole { user, role } => {
            let message = "user revoke-role requires user name and role name as its argument";
            let (user, role) = (one(user, message)?, one(role, message)?);
            let mut c = ctx.connect().await?;
            let r = c
                .user_revoke_role(user.clone(), role.clone())
                .await
                .map_err(|e| ctx.failed(e))?;
            let line = format!("Role {role} is revoked from user {user}");
            ctx.print(out::changed(f, &line, r.header()))
        }
    }
}

/// etcdctl's key and range end of a permission argument list.
fn perm_range(
    key: &str,
    end: Option<&String>,
    prefix: bool,
    from_key: bool,
) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    if prefix && from_key {
        return Err(bad("--from-key and --prefix flags are mutually exclusive"));
    }
    if end.is_some() && (prefix || from_key) {
        let flag = if prefix { "--prefix" } else { "--from-key" };
        return Err(bad(format!("unexpected endkey argument with {flag} flag")));
    }
    let key_bytes = if key.is_empty() {
        vec![0]
    } else {
        key.as_bytes().to_vec()
    };
    let end = match end {
        Some(e) => e.as_bytes().to_vec(),
        None if from_key || (prefix && key.is_empty()) => vec![0],
        None if prefix => out::prefix_end(key.as_bytes()),
        None => Vec::new(),
    };
    Ok((key_bytes, end))
}

/// Runs one `role` subcommand.
pub async fn role(ctx: &Ctx, command: RoleCommand) -> Result<(), Failure> {
    let f = ctx.printer.format();
    match command {
        RoleCommand::Add { name } => {
            let name = one(name, "role add command requires role name as its argument")?;
            let mut c = ctx.connect().await?;
            let r = c.role_add(name.clone()).await.map_err(|e| ctx.failed(e))?;
            ctx.print(out::changed(f, &format!("Role {name} created"), r.header()))
        }
        RoleCommand::Delete { name } => {
            let name = one(
                name,
                "role delete command requires role name as its argument",
            )?;
            let mut c = ctx.connect().await?;
            let r = c
                .role_delete(name.clone())
                .await
                .map_err(|e| ctx.failed(e))?;
            ctx.print(out::changed(f, &format!("Role {name} deleted"), r.header()))
        }
        RoleCommand::Get { name } => {
            let name = one(name, "role get command requires role name as its argument")?;
            let mut c = ctx.connect().await?;
            let r = c.role_get(name.clone()).await.map_err(|e| ctx.failed(e))?;
            ctx.print(out::role_get(f, &name, &r))
        }
        RoleCommand::List => {
            let mut c = ctx.connect().await?;
            let r = c.role_list().await.map_err(|e| ctx.failed(e))?;
            ctx.print(out::role_list(f, &r))
        }
        RoleCommand::GrantPermission {
            args,
            prefix,
            from_key,
        } => {
            if args.len() < 3 || args.len() > 4 {
                return Err(bad("role grant command requires role name, permission type, and key [endkey] as its argument"));
            }
            let kind = match args[1].to_ascii_lowercase().as_str() {
                "read" => PermissionType::Read,
                "write" => PermissionType::Write,
                "readwrite" => PermissionType::Readwrite,
                _ => return Err(bad(format!("invalid permission type: {}", args[1]))),
            };
            let (key, end) = perm_range(&args[2], args.get(3), prefix, from_key)?;
            let perm = Permission::new(kind, key).with_range_end(end);
            let mut c = ctx.connect().await?;
            let r = c
                .role_grant_permission(args[0].clone(), perm)
                .await
                .map_err(|e| ctx.failed(e))?;
            ctx.print(out::changed(
                f,
                &format!("Role {} updated", args[0]),
                r.header(),
            ))
        }
        RoleCommand::RevokePermission {
            args,
            prefix,
            from_key,
        } => {
            if args.len() < 2 || args.len() > 3 {
                return Err(bad("role revoke-permission command requires role name and key [endkey] as its argument"));
            }
            let (key, end) = perm_range(&args[1], args.get(2), prefix, from_key)?;
            let options = RoleRevokePermissionOptions::new().with_range_end(end.clone());
            let mut c = ctx.connect().await?;
            let r = c
                .role_revoke_permission(args[0].clone(), key, Some(options))
                .await
                .map_err(|e| ctx.failed(e))?;
            let shown = &args[1];
            let line = match end.as_slice() {
                [] => format!("Permission of key {shown} is revoked from role {}", args[0]),
                [0] => format!(
                    "Permission of range [{shown}, <open ended> is revoked from role {}",
                    args[0]
                ),
                e => format!(
                    "Permission of range [{shown}, {}) is revoked from role {}",
                    String::from_utf8_lossy(e),
                    args[0]
                ),
            };
            ctx.print(out::changed(f, &line, r.header()))
        }
    }
}

/// Runs one `auth` subcommand; etcdctl prints its sentence in every format.
pub async fn auth(ctx: &Ctx, command: AuthCommand) -> Result<(), Failure> {
    let mut c = ctx.connect().await?;
    match command {
        AuthCommand::Enable => {
            // etcdctl creates and grants the root role when it is missing.
            loop {
                match c.auth_enable().await {
                    Ok(_) => break,
                    Err(etcd_client::Error::GRpcStatus(s))
                        if s.message() == "etcdserver: root user does not have root role" =>
                    {
                        c.role_add("root").await.map_err(|e| ctx.failed(e))?;
                        c.user_grant_role("root", "root")
                            .await
                            .map_err(|e| ctx.failed(e))?;
                    }
                    Err(e) => return Err(ctx.failed(e)),
                }
            }
            println!("Authentication Enabled");
        }
        AuthCommand::Disable => {
            c.auth_disable().await.map_err(|e| ctx.failed(e))?;
            println!("Authentication Disabled");
        }
    }
    Ok(())
}
