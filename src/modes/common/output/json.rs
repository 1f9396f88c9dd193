//! `-w json`: responses as etcdctl prints them (Go's `encoding/json` of the
//! gogo-protobuf structs: etcd's field names, zero values left out, one
//! line).

use std::fmt::Write as _;

use base64::Engine as _;
use etcd_client::{
    AlarmResponse, DeleteResponse, GetResponse, KeyValue, LeaseGrantResponse,
    LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse,
    MemberAddResponse, MemberListResponse, MemberPromoteResponse, MemberRemoveResponse,
    MemberUpdateResponse, MoveLeaderResponse, PutResponse, TxnOpResponse, TxnResponse,
};

use super::{go_duration, EndpointHashKv, EndpointHealth, EndpointStatus};

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

    /// clientv3's struct embeds the header: its fields come first, flat.
    fn lease_grant(&self, r: &LeaseGrantResponse) -> Printed {
        Ok(format!(
            "{}\n",
            flat_header(r.header())
                .int("ID", r.id().into())
                .int("TTL", r.ttl().into())
                .always("Error", "\"\"")
                .done()
        ))
    }

    fn lease_revoke(&self, _id: i64, r: &LeaseRevokeResponse) -> Printed {
        Ok(format!(
            "{}\n",
            Obj::new().raw("header", header_json(r.header())).done()
        ))
    }

    fn lease_time_to_live(&self, r: &LeaseTimeToLiveResponse, _keys: bool) -> Printed {
        let keys = if r.keys().is_empty() {
            "null".to_string()
        } else {
            let items: Vec<String> = r
                .keys()
                .iter()
                .map(|k| {
                    format!(
                        "\"{}\"",
                        base64::engine::general_purpose::STANDARD.encode(k)
                    )
                })
                .collect();
            format!("[{}]", items.join(","))
        };
        Ok(format!(
            "{}\n",
            flat_header(r.header())
                .always("id", &r.id().to_string())
                .always("ttl", &r.ttl().to_string())
                .always("granted-ttl", &r.granted_ttl().to_string())
                .always("keys", &keys)
                .done()
        ))
    }

    fn lease_list(&self, r: &LeaseLeasesResponse) -> Printed {
        let items: Vec<String> = r
            .leases()
            .iter()
            .map(|l| format!("{{\"id\":{}}}", l.id()))
            .collect();
        Ok(format!(
            "{}\n",
            flat_header(r.header())
                .always("leases", &format!("[{}]", items.join(",")))
                .done()
        ))
    }

    fn lease_keep_alive(&self, r: &LeaseKeepAliveResponse) -> Printed {
        Ok(format!(
            "{}\n",
            flat_header(r.header())
                .int("ID", r.id().into())
                .int("TTL", r.ttl().into())
                .done()
        ))
    }

    /// The alarm enum as its number (NOSPACE 1, CORRUPT 2).
    fn alarm(&self, r: &AlarmResponse) -> Printed {
        let items: Vec<String> = r
            .alarms()
            .iter()
            .map(|a| {
                Obj::new()
                    .int("memberID", a.member_id().into())
                    .int("alarm", (a.alarm() as i32).into())
                    .done()
            })
            .collect();
        let list = (!items.is_empty()).then(|| format!("[{}]", items.join(",")));
        Ok(format!(
            "{}\n",
            Obj::new()
                .raw("header", header_json(r.header()))
                .raw("alarms", list)
                .done()
        ))
    }

    fn endpoint_health(&self, all: &[EndpointHealth]) -> Printed {
        let items: Vec<String> = all
            .iter()
            .map(|h| {
                let mut o = Obj::new()
                    .always("endpoint", &go_json_string(&h.endpoint))
                    .always("health", if h.error.is_none() { "true" } else { "false" })
                    .always("took", &go_json_string(&go_duration(h.took)));
                if let Some(e) = &h.error {
                    o = o.always("error", &go_json_string(e));
                }
                o.done()
            })
            .collect();
        Ok(format!("[{}]\n", items.join(",")))
    }

    fn endpoint_status(&self, all: &[EndpointStatus]) -> Printed {
        let items: Vec<String> = all
            .iter()
            .map(|e| {
                let s = &e.status;
                let errors = (!s.errors().is_empty()).then(|| {
                    let items: Vec<String> = s.errors().iter().map(|x| go_json_string(x)).collect();
                    format!("[{}]", items.join(","))
                });
                let version = (!s.version().is_empty()).then(|| go_json_string(s.version()));
                let status = Obj::new()
                    .raw("header", header_json(s.header()))
                    .raw("version", version)
                    .int("dbSize", s.db_size().into())
                    .int("leader", s.leader().into())
                    .int("raftIndex", s.raft_index().into())
                    .int("raftTerm", s.raft_term().into())
                    .int("raftAppliedIndex", s.raft_applied_index().into())
                    .raw("errors", errors)
                    .int("dbSizeInUse", s.raft_used_db_size().into())
                    .bool("isLearner", s.is_learner())
                    .done();
                format!(
                    "{{\"Endpoint\":{},\"Status\":{status}}}",
                    go_json_string(&e.endpoint)
                )
            })
            .collect();
        Ok(format!("[{}]\n", items.join(",")))
    }

    fn endpoint_hash_kv(&self, all: &[EndpointHashKv]) -> Printed {
        let items: Vec<String> = all
            .iter()
            .map(|e| {
                let h = &e.hash;
                let inner = Obj::new()
                    .raw("header", header_json(h.header()))
                    .int("hash", h.hash().into())
                    .int("compact_revision", h.compact_version().into())
                    .done();
                format!(
                    "{{\"Endpoint\":{},\"HashKV\":{inner}}}",
                    go_json_string(&e.endpoint)
                )
            })
            .collect();
        Ok(format!("[{}]\n", items.join(",")))
    }

    /// The server sets no header: `{}`.
    fn move_leader(&self, _leader: u64, _target: u64, r: &MoveLeaderResponse) -> Printed {
        Ok(format!(
            "{}\n",
            Obj::new().raw("header", header_json(r.header())).done()
        ))
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
pub(super) struct Obj(Vec<String>);

impl Obj {
    pub(super) fn new() -> Self {
        Obj(Vec::new())
    }

    pub(super) fn int(mut self, name: &str, v: i128) -> Self {
        if v != 0 {
            self.0.push(format!("\"{name}\":{v}"));
        }
        self
    }

    pub(super) fn bool(mut self, name: &str, v: bool) -> Self {
        if v {
            self.0.push(format!("\"{name}\":true"));
        }
        self
    }

    /// `[]byte`: base64, left out when empty.
    pub(super) fn bytes(mut self, name: &str, v: &[u8]) -> Self {
        if !v.is_empty() {
            let b64 = base64::engine::general_purpose::STANDARD.encode(v);
            self.0.push(format!("\"{name}\":\"{b64}\""));
        }
        self
    }

    /// A nested object or list, left out when `None` or empty.
    pub(super) fn raw(mut self, name: &str, v: Option<String>) -> Self {
        if let Some(v) = v.filter(|v| v != "[]") {
            self.0.push(format!("\"{name}\":{v}"));
        }
        self
    }

    /// A field without `omitempty`: `v` is its JSON already.
    pub(super) fn always(mut self, name: &str, v: &str) -> Self {
        self.0.push(format!("\"{name}\":{v}"));
        self
    }

    pub(super) fn done(self) -> String {
        format!("{{{}}}", self.0.join(","))
    }
}

/// A clientv3 struct embedding `*pb.ResponseHeader`: the header's fields
/// at the top level.
fn flat_header(h: Option<&etcd_client::ResponseHeader>) -> Obj {
    let o = Obj::new();
    match h {
        Some(h) => o
            .int("cluster_id", h.cluster_id().into())
            .int("member_id", h.member_id().into())
            .int("revision", h.revision().into())
            .int("raft_term", h.raft_term().into()),
        None => o,
    }
}

pub(super) fn header_json(h: Option<&etcd_client::ResponseHeader>) -> Option<String> {
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
