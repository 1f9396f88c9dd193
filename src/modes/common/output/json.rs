//! `-w json`: responses as etcdctl prints them (Go's `encoding/json` of the
//! gogo-protobuf structs: etcd's field names, zero values left out, one
//! line).

use std::fmt::Write as _;

use base64::Engine as _;
use etcd_client::{
    DeleteResponse, GetResponse, KeyValue, MemberAddResponse, MemberListResponse,
    MemberPromoteResponse, MemberRemoveResponse, MemberUpdateResponse, PutResponse, TxnOpResponse,
    TxnResponse,
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

    fn get(&self, r: &GetResponse, _hex: bool, _value_only: bool) -> Printed {
        Ok(format!("{}\n", range_json(r)))
    }

    fn put(&self, r: &PutResponse, _hex: bool) -> Printed {
        Ok(format!("{}\n", put_json(r)))
    }

    fn del(&self, r: &DeleteResponse, _hex: bool) -> Printed {
        Ok(format!("{}\n", del_json(r)))
    }

    fn txn(&self, r: &TxnResponse, _hex: bool) -> Printed {
        Ok(format!("{}\n", txn_json(r)))
    }

    /// etcdctl's `snapshot.Status` struct as Go encodes it.
    fn snapshot_status(&self, s: &FileStatus) -> Printed {
        Ok(format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
            s.hash, s.revision, s.total_keys, s.total_size
        ))
    }
}

/// Go's `encoding/json` of a gogo-protobuf message: fields in declaration
/// order, zero values left out (`omitempty`).
struct Obj(Vec<String>);

impl Obj {
    fn new() -> Self {
        Obj(Vec::new())
    }

    fn int(mut self, name: &str, v: i128) -> Self {
        if v != 0 {
            self.0.push(format!("\"{name}\":{v}"));
        }
        self
    }

    fn bool(mut self, name: &str, v: bool) -> Self {
        if v {
            self.0.push(format!("\"{name}\":true"));
        }
        self
    }

    /// `[]byte`: base64, left out when empty.
    fn bytes(mut self, name: &str, v: &[u8]) -> Self {
        if !v.is_empty() {
            let b64 = base64::engine::general_purpose::STANDARD.encode(v);
            self.0.push(format!("\"{name}\":\"{b64}\""));
        }
        self
    }

    /// A nested object or list, left out when `None` or empty.
    fn raw(mut self, name: &str, v: Option<String>) -> Self {
        if let Some(v) = v.filter(|v| v != "[]") {
            self.0.push(format!("\"{name}\":{v}"));
        }
        self
    }

    fn done(self) -> String {
        format!("{{{}}}", self.0.join(","))
    }
}

fn header_json(h: Option<&etcd_client::ResponseHeader>) -> Option<String> {
    h.map(|h| {
        Obj::new()
            .int("cluster_id", h.cluster_id().into())
            .int("member_id", h.member_id().into())
            .int("revision", h.revision().into())
            .int("raft_term", h.raft_term().into())
            .done()
    })
}

fn kv_json(kv: &KeyValue) -> String {
    Obj::new()
        .bytes("key", kv.key())
        .int("create_revision", kv.create_revision().into())
        .int("mod_revision", kv.mod_revision().into())
        .int("version", kv.version().into())
        .bytes("value", kv.value())
        .int("lease", kv.lease().into())
        .done()
}

fn kvs_json(kvs: &[KeyValue]) -> Option<String> {
    (!kvs.is_empty()).then(|| {
        let items: Vec<String> = kvs.iter().map(kv_json).collect();
        format!("[{}]", items.join(","))
    })
}

fn range_json(r: &GetResponse) -> String {
    Obj::new()
        .raw("header", header_json(r.header()))
        .raw("kvs", kvs_json(r.kvs()))
        .bool("more", r.more())
        .int("count", r.count().into())
        .done()
}

fn put_json(r: &PutResponse) -> String {
    Obj::new()
        .raw("header", header_json(r.header()))
        .raw("prev_kv", r.prev_key().map(kv_json))
        .done()
}

fn del_json(r: &DeleteResponse) -> String {
    Obj::new()
        .raw("header", header_json(r.header()))
        .int("deleted", r.deleted().into())
        .raw("prev_kvs", kvs_json(r.prev_kvs()))
        .done()
}

/// A `TxnResponse`; each response is gogo's oneof wrapper, named by its
/// Go field (`{"Response":{"ResponsePut":{…}}}`).
fn txn_json(r: &TxnResponse) -> String {
    let items: Vec<String> = r
        .op_responses()
        .into_iter()
        .map(|op| {
            let (name, inner) = match op {
                TxnOpResponse::Put(p) => ("ResponsePut", put_json(&p)),
                TxnOpResponse::Get(g) => ("ResponseRange", range_json(&g)),
                TxnOpResponse::Delete(d) => ("ResponseDeleteRange", del_json(&d)),
                TxnOpResponse::Txn(t) => ("ResponseTxn", txn_json(&t)),
            };
            format!("{{\"Response\":{{\"{name}\":{inner}}}}}")
        })
        .collect();
    Obj::new()
        .raw("header", header_json(r.header()))
        .bool("succeeded", r.succeeded())
        .raw("responses", Some(format!("[{}]", items.join(","))))
        .done()
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
