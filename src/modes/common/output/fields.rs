//! `-w fields`: etcdctl's `"Field" : value` lines (`printer_fields.go`).

use std::fmt::Write as _;

use etcd_client::{DeleteResponse, GetResponse, KeyValue, MemberListResponse, PutResponse};

use super::{go_quote, OutputFormat, Printed, Printer};
use crate::core::snapshot::FileStatus;

/// etcdctl's `fieldsPrinter`.
pub struct FieldsPrinter;

impl Printer for FieldsPrinter {
    fn format(&self) -> OutputFormat {
        OutputFormat::Fields
    }

    fn member_list(&self, r: &MemberListResponse) -> Printed {
        let mut out = header(r.header());
        for m in r.members() {
            let _ = writeln!(out, "\"ID\" : {}", m.id());
            let _ = writeln!(out, "\"Name\" : {}", go_quote(m.name()));
            for u in m.peer_urls() {
                let _ = writeln!(out, "\"PeerURL\" : {}", go_quote(u));
            }
            for u in m.client_urls() {
                let _ = writeln!(out, "\"ClientURL\" : {}", go_quote(u));
            }
            let _ = writeln!(out, "\"IsLearner\" : {}", m.is_learner());
            out.push('\n');
        }
        Ok(out)
    }

    fn get(&self, r: &GetResponse, _hex: bool, _value_only: bool) -> Printed {
        let mut out = header(r.header());
        for kv in r.kvs() {
            kv_fields(&mut out, "", kv);
        }
        let _ = writeln!(out, "\"More\" : {}", r.more());
        let _ = writeln!(out, "\"Count\" : {}", r.count());
        Ok(out)
    }

    fn put(&self, r: &PutResponse, _hex: bool) -> Printed {
        let mut out = header(r.header());
        if let Some(kv) = r.prev_key() {
            kv_fields(&mut out, "Prev", kv);
        }
        Ok(out)
    }

    fn del(&self, r: &DeleteResponse, _hex: bool) -> Printed {
        let mut out = header(r.header());
        for kv in r.prev_kvs() {
            kv_fields(&mut out, "Prev", kv);
        }
        let _ = writeln!(out, "\"Deleted\" : {}", r.deleted());
        Ok(out)
    }

    fn snapshot_status(&self, s: &FileStatus) -> Printed {
        Ok(format!(
            "\"Hash\" : {}\n\"Revision\" : {}\n\"Keys\" : {}\n\"Size\" : {}\n",
            s.hash, s.revision, s.total_keys, s.total_size
        ))
    }
}

/// etcdctl's `fieldsPrinter.kv` with field prefix `pfx`.
fn kv_fields(out: &mut String, pfx: &str, kv: &KeyValue) {
    let text = |b: &[u8]| go_quote(&String::from_utf8_lossy(b));
    let _ = writeln!(out, "\"{pfx}Key\" : {}", text(kv.key()));
    let _ = writeln!(out, "\"{pfx}CreateRevision\" : {}", kv.create_revision());
    let _ = writeln!(out, "\"{pfx}ModRevision\" : {}", kv.mod_revision());
    let _ = writeln!(out, "\"{pfx}Version\" : {}", kv.version());
    let _ = writeln!(out, "\"{pfx}Value\" : {}", text(kv.value()));
    let _ = writeln!(out, "\"{pfx}Lease\" : {}", kv.lease());
}

/// etcdctl's `fieldsPrinter.hdr`.
fn header(h: Option<&etcd_client::ResponseHeader>) -> String {
    let (cluster, member, revision, term) = h.map_or((0, 0, 0, 0), |h| {
        (h.cluster_id(), h.member_id(), h.revision(), h.raft_term())
    });
    format!(
        "\"ClusterID\" : {cluster}\n\"MemberID\" : {member}\n\"Revision\" : {revision}\n\"RaftTerm\" : {term}\n"
    )
}
