//! `-w fields`: etcdctl's `"Field" : value` lines (`printer_fields.go`).

use std::fmt::Write as _;

use etcd_client::{
    DeleteResponse, GetResponse, KeyValue, LeaseGrantResponse, LeaseKeepAliveResponse,
    LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse, MemberListResponse,
    PutResponse,
};

use super::{go_duration, EndpointHashKv, EndpointHealth, EndpointStatus};

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

    fn lease_grant(&self, r: &LeaseGrantResponse) -> Printed {
        Ok(format!(
            "{}\"ID\" : {}\n\"TTL\" : {}\n",
            header(r.header()),
            r.id(),
            r.ttl()
        ))
    }

    fn lease_revoke(&self, _id: i64, r: &LeaseRevokeResponse) -> Printed {
        Ok(header(r.header()))
    }

    fn lease_time_to_live(&self, r: &LeaseTimeToLiveResponse, _keys: bool) -> Printed {
        let mut out = header(r.header());
        let _ = writeln!(out, "\"ID\" : {}", r.id());
        let _ = writeln!(out, "\"TTL\" : {}", r.ttl());
        let _ = writeln!(out, "\"GrantedTTL\" : {}", r.granted_ttl());
        for k in r.keys() {
            let _ = writeln!(out, "\"Key\" : {}", go_quote(&String::from_utf8_lossy(k)));
        }
        Ok(out)
    }

    fn lease_list(&self, r: &LeaseLeasesResponse) -> Printed {
        let mut out = header(r.header());
        for l in r.leases() {
            let _ = writeln!(out, "\"ID\" : {}", l.id());
        }
        Ok(out)
    }

    fn lease_keep_alive(&self, r: &LeaseKeepAliveResponse) -> Printed {
        Ok(format!(
            "{}\"ID\" : {}\n\"TTL\" : {}\n",
            header(r.header()),
            r.id(),
            r.ttl()
        ))
    }

    fn endpoint_health(&self, all: &[EndpointHealth]) -> Printed {
        let mut out = String::new();
        for h in all {
            let _ = writeln!(out, "\"Endpoint\" : {}", go_quote(&h.endpoint));
            let _ = writeln!(out, "\"Health\" : {}", h.error.is_none());
            let _ = writeln!(out, "\"Took\" : {}", go_duration(h.took));
            let _ = writeln!(out, "\"Error\" : {}", h.error.as_deref().unwrap_or(""));
            out.push('\n');
        }
        Ok(out)
    }

    fn endpoint_status(&self, all: &[EndpointStatus]) -> Printed {
        let mut out = String::new();
        for e in all {
            let s = &e.status;
            out.push_str(&header(s.header()));
            let _ = writeln!(out, "\"Version\" : {}", go_quote(s.version()));
            let _ = writeln!(out, "\"DBSize\" : {}", s.db_size());
            let _ = writeln!(out, "\"Leader\" : {}", s.leader());
            let _ = writeln!(out, "\"IsLearner\" : {}", s.is_learner());
            let _ = writeln!(out, "\"RaftIndex\" : {}", s.raft_index());
            let _ = writeln!(out, "\"RaftTerm\" : {}", s.raft_term());
            let _ = writeln!(out, "\"RaftAppliedIndex\" : {}", s.raft_applied_index());
            let _ = writeln!(out, "\"Errors\" : [{}]", s.errors().join(" "));
            let _ = writeln!(out, "\"Endpoint\" : {}", go_quote(&e.endpoint));
            out.push('\n');
        }
        Ok(out)
    }

    fn endpoint_hash_kv(&self, all: &[EndpointHashKv]) -> Printed {
        let mut out = String::new();
        for e in all {
            out.push_str(&header(e.hash.header()));
            let _ = writeln!(out, "\"Endpoint\" : {}", go_quote(&e.endpoint));
            let _ = writeln!(out, "\"Hash\" : {}", e.hash.hash());
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
pub(super) fn header(h: Option<&etcd_client::ResponseHeader>) -> String {
    let (cluster, member, revision, term) = h.map_or((0, 0, 0, 0), |h| {
        (h.cluster_id(), h.member_id(), h.revision(), h.raft_term())
    });
    format!(
        "\"ClusterID\" : {cluster}\n\"MemberID\" : {member}\n\"Revision\" : {revision}\n\"RaftTerm\" : {term}\n"
    )
}
