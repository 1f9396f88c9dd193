//! `-w json`: responses as etcdctl prints them (Go's `encoding/json` of the
//! gogo-protobuf structs: etcd's field names, zero values left out, one
//! line).

use std::fmt::Write as _;

use etcd_client::{
    MemberAddResponse, MemberListResponse, MemberPromoteResponse, MemberRemoveResponse,
    MemberUpdateResponse,
};

use super::{OutputFormat, Printed, Printer};
use crate::core::snapshot::FileStatus;

/// etcdctl's `jsonPrinter`.
pub struct JsonPrinter;

impl Printer for JsonPrinter {
    fn format(&self) -> OutputFormat {
        OutputFormat::Json
    }

    fn member_list(&self, r: &MemberListResponse) -> Printed {
        Ok(render_json(r.header(), None, Some(r.members())))
    }

    fn member_add(&self, r: &MemberAddResponse) -> Printed {
        Ok(render_json(r.header(), r.member(), Some(r.member_list())))
    }

    fn member_remove(&self, _id: u64, r: &MemberRemoveResponse) -> Printed {
        Ok(render_json(r.header(), None, Some(r.members())))
    }

    fn member_update(&self, _id: u64, r: &MemberUpdateResponse) -> Printed {
        Ok(render_json(r.header(), None, Some(r.members())))
    }

    /// etcdctl 3.4 crashes on `promote -w json` (a nil printer); kvd prints
    /// the response as every other json output does.
    fn member_promote(&self, _id: u64, r: &MemberPromoteResponse) -> Printed {
        Ok(render_json(r.header(), None, Some(r.members())))
    }

    /// etcdctl's `snapshot.Status` struct as Go encodes it.
    fn snapshot_status(&self, s: &FileStatus) -> Printed {
        Ok(format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
            s.hash, s.revision, s.total_keys, s.total_size
        ))
    }
}

/// A membership response: header, member, members (ids as decimal numbers,
/// no spaces).
fn render_json(
    header: Option<&etcd_client::ResponseHeader>,
    member: Option<&etcd_client::Member>,
    members: Option<&[etcd_client::Member]>,
) -> String {
    let mut fields = Vec::new();
    if let Some(h) = header {
        let mut parts = Vec::new();
        for (name, value) in [
            ("cluster_id", i128::from(h.cluster_id())),
            ("member_id", i128::from(h.member_id())),
            ("revision", i128::from(h.revision())),
            ("raft_term", i128::from(h.raft_term())),
        ] {
            if value != 0 {
                parts.push(format!("\"{name}\":{value}"));
            }
        }
        fields.push(format!("\"header\":{{{}}}", parts.join(",")));
    }
    if let Some(m) = member {
        fields.push(format!("\"member\":{}", member_json(m)));
    }
    if let Some(ms) = members.filter(|ms| !ms.is_empty()) {
        let items: Vec<String> = ms.iter().map(member_json).collect();
        fields.push(format!("\"members\":[{}]", items.join(",")));
    }
    format!("{{{}}}\n", fields.join(","))
}

fn member_json(m: &etcd_client::Member) -> String {
    let mut parts = Vec::new();
    if m.id() != 0 {
        parts.push(format!("\"ID\":{}", m.id()));
    }
    if !m.name().is_empty() {
        parts.push(format!("\"name\":{}", go_json_string(m.name())));
    }
    for (name, urls) in [("peerURLs", m.peer_urls()), ("clientURLs", m.client_urls())] {
        if !urls.is_empty() {
            let items: Vec<String> = urls.iter().map(|u| go_json_string(u)).collect();
            parts.push(format!("\"{name}\":[{}]", items.join(",")));
        }
    }
    if m.is_learner() {
        parts.push("\"isLearner\":true".to_string());
    }
    format!("{{{}}}", parts.join(","))
}

/// A JSON string as Go 1.19's `encoding/json` writes it: `<`, `>`, `&`,
/// U+2028 and U+2029 escaped as `\uXXXX`; `\n`, `\r`, `\t` short; other
/// control characters as `\u00XX`; everything else as is.
pub fn go_json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_like_go() {
        assert_eq!(
            go_json_string("a<b>&\"\\\n\u{1}é"),
            r#""a\u003cb\u003e\u0026\"\\\n\u0001é""#
        );
    }
}
