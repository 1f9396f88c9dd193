//! The outputs of `user`, `role` and `auth` as etcdctl 3.4 prints them in
//! each format (its `printer*.go` for the auth responses): a change prints
//! one sentence (simple), its header (json, fields) or nothing but
//! etcdctl's refusal (table); `user get`, `user list`, `role get` and
//! `role list` print their lists.

use std::fmt::Write as _;

use etcd_client::{
    Permission, ResponseHeader, RoleGetResponse, RoleListResponse, UserGetResponse,
    UserListResponse,
};

use super::json::{header_json, Obj};
use super::{fields, go_quote, OutputFormat, Printed, Unsupported};

fn refuse(format: OutputFormat, command: &'static str, alternatives: &'static str) -> Printed {
    Err(Unsupported {
        format: format.name(),
        command,
        alternatives,
    })
}

fn json_list(items: &[String]) -> Option<String> {
    let quoted: Vec<String> = items.iter().map(|s| super::go_json_string(s)).collect();
    Some(format!("[{}]", quoted.join(",")))
}

/// A user or role change: `simple` is etcdctl's sentence.
pub fn changed(format: OutputFormat, simple: &str, header: Option<&ResponseHeader>) -> Printed {
    match format {
        OutputFormat::Simple => Ok(format!("{simple}\n")),
        OutputFormat::Json => Ok(format!(
            "{}\n",
            Obj::new().raw("header", header_json(header)).done()
        )),
        OutputFormat::Fields => Ok(fields::header(header)),
        OutputFormat::Table => refuse(format, "user and role changes", "simple, json or fields"),
    }
}

/// `user get`.
pub fn user_get(format: OutputFormat, name: &str, r: &UserGetResponse) -> Printed {
    match format {
        OutputFormat::Simple => {
            let mut out = format!("User: {name}\nRoles:");
            for role in r.roles() {
                let _ = write!(out, " {role}");
            }
            out.push('\n');
            Ok(out)
        }
        OutputFormat::Json => Ok(format!(
            "{}\n",
            Obj::new()
                .raw("header", header_json(r.header()))
                .raw("roles", json_list(r.roles()))
                .done()
        )),
        _ => refuse(format, "user get", "simple or json"),
    }
}

/// A list of names (`user list`, `role list`) in simple or json: one per
/// line, or the response with its `field`.
fn names(
    format: OutputFormat,
    header: Option<&ResponseHeader>,
    field: &str,
    items: &[String],
) -> Option<String> {
    match format {
        OutputFormat::Simple => Some(items.iter().map(|u| format!("{u}\n")).collect()),
        OutputFormat::Json => Some(format!(
            "{}\n",
            Obj::new()
                .raw("header", header_json(header))
                .raw(field, json_list(items))
                .done()
        )),
        _ => None,
    }
}

/// `user list`.
pub fn user_list(format: OutputFormat, r: &UserListResponse) -> Printed {
    match names(format, r.header(), "users", r.users()) {
        Some(text) => Ok(text),
        None => refuse(format, "user list", "simple or json"),
    }
}

/// `role list`.
pub fn role_list(format: OutputFormat, r: &RoleListResponse) -> Printed {
    if let Some(text) = names(format, r.header(), "roles", r.roles()) {
        return Ok(text);
    }
    match format {
        OutputFormat::Fields => {
            let mut out = fields::header(r.header());
            out.push_str("\"Roles\" :");
            for role in r.roles() {
                let _ = write!(out, " {}", go_quote(role));
            }
            out.push('\n');
            Ok(out)
        }
        _ => refuse(format, "role list", "simple, json or fields"),
    }
}

pub use crate::core::mvcc::keys::prefix_end;

/// One permission's range as etcdctl's `role get` shows it.
fn perm_range(p: &Permission) -> String {
    let key = String::from_utf8_lossy(p.key());
    match p.range_end() {
        [] => key.into_owned(),
        [0] => format!("[{key}, <open ended>"),
        end => {
            let mut shown = format!("[{key}, {})", String::from_utf8_lossy(end));
            if end == prefix_end(p.key()).as_slice() {
                let _ = write!(shown, " (prefix {key})");
            }
            shown
        }
    }
}

/// etcd's permission type names (`authpb.Permission.Type`).
fn perm_type_name(t: i32) -> &'static str {
    match t {
        0 => "READ",
        1 => "WRITE",
        _ => "READWRITE",
    }
}

/// `role get`.
pub fn role_get(format: OutputFormat, name: &str, r: &RoleGetResponse) -> Printed {
    let perms = r.permissions();
    match format {
        OutputFormat::Simple => {
            let mut out = format!("Role {name}\nKV Read:\n");
            for p in perms.iter().filter(|p| p.get_type() != 1) {
                let _ = writeln!(out, "\t{}", perm_range(p));
            }
            out.push_str("KV Write:\n");
            for p in perms.iter().filter(|p| p.get_type() != 0) {
                let _ = writeln!(out, "\t{}", perm_range(p));
            }
            Ok(out)
        }
        OutputFormat::Json => {
            let items: Vec<String> = perms
                .iter()
                .map(|p| {
                    Obj::new()
                        .int("permType", p.get_type().into())
                        .bytes("key", p.key())
                        .bytes("range_end", p.range_end())
                        .done()
                })
                .collect();
            Ok(format!(
                "{}\n",
                Obj::new()
                    .raw("header", header_json(r.header()))
                    .raw("perm", Some(format!("[{}]", items.join(","))))
                    .done()
            ))
        }
        OutputFormat::Fields => {
            let mut out = fields::header(r.header());
            let text = |b: &[u8]| go_quote(&String::from_utf8_lossy(b));
            for p in &perms {
                let _ = writeln!(out, "\"PermType\" :  {}", perm_type_name(p.get_type()));
                let _ = writeln!(out, "\"Key\" : {}", text(p.key()));
                let _ = writeln!(out, "\"RangeEnd\" : {}", text(p.range_end()));
            }
            Ok(out)
        }
        OutputFormat::Table => refuse(format, "role get", "simple, json or fields"),
    }
}
