//! `-w fields`: etcdctl's `"Field" : value` lines (`printer_fields.go`).

use std::fmt::Write as _;

use etcd_client::MemberListResponse;

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

    fn snapshot_status(&self, s: &FileStatus) -> Printed {
        Ok(format!(
            "\"Hash\" : {}\n\"Revision\" : {}\n\"Keys\" : {}\n\"Size\" : {}\n",
            s.hash, s.revision, s.total_keys, s.total_size
        ))
    }
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
