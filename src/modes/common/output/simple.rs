//! `-w simple`: etcdctl's plain lines.

use std::fmt::Write as _;

use etcd_client::{
    AlarmResponse, DeleteResponse, EventType, GetResponse, KeyValue, LeaseGrantResponse,
    LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse,
    MemberAddResponse, MemberListResponse, MemberPromoteResponse, MemberRemoveResponse,
    MemberUpdateResponse, MoveLeaderResponse, PutResponse, TxnOpResponse, TxnResponse,
    WatchResponse,
};

use super::{
    cluster_id, db_status_row, endpoint_hash_kv_rows, endpoint_status_rows, hex_escaped,
    member_rows, EndpointHashKv, EndpointHealth, EndpointStatus, OutputFormat, Printed, Printer,
};
use crate::core::snapshot::FileStatus;

/// etcdctl's `simplePrinter`.
pub struct SimplePrinter;

impl Printer for SimplePrinter {
    fn format(&self) -> OutputFormat {
        OutputFormat::Simple
    }

    /// One line per member, fields joined by `", "`.
    fn member_list(&self, r: &MemberListResponse) -> Printed {
        let mut out = String::new();
        for row in member_rows(r.members()) {
            out.push_str(&row.join(", "));
            out.push('\n');
        }
        Ok(out)
    }

    fn member_add(&self, r: &MemberAddResponse) -> Printed {
        let id = r.member().map_or(0, etcd_client::Member::id);
        Ok(format!(
            "Member {id:>16x} added to cluster {:>16x}\n",
            cluster_id(r.header())
        ))
    }

    fn member_remove(&self, id: u64, r: &MemberRemoveResponse) -> Printed {
        Ok(change(id, "removed from", r.header()))
    }

    fn member_update(&self, id: u64, r: &MemberUpdateResponse) -> Printed {
        Ok(change(id, "updated in", r.header()))
    }

    fn member_promote(&self, id: u64, r: &MemberPromoteResponse) -> Printed {
        Ok(change(id, "promoted in", r.header()))
    }

    /// The status row joined by `", "`.
    fn snapshot_status(&self, s: &FileStatus) -> Printed {
        Ok(format!("{}\n", db_status_row(s).1.join(", ")))
    }

    fn get(&self, r: &GetResponse, hex: bool, value_only: bool) -> Printed {
        let mut out = String::new();
        for kv in r.kvs() {
            print_kv(&mut out, kv, hex, value_only);
        }
        Ok(out)
    }

    fn put(&self, r: &PutResponse, hex: bool) -> Printed {
        let mut out = String::from("OK\n");
        if let Some(kv) = r.prev_key() {
            print_kv(&mut out, kv, hex, false);
        }
        Ok(out)
    }

    fn del(&self, r: &DeleteResponse, hex: bool) -> Printed {
        let mut out = format!("{}\n", r.deleted());
        for kv in r.prev_kvs() {
            print_kv(&mut out, kv, hex, false);
        }
        Ok(out)
    }

    /// SUCCESS or FAILURE, then each response after an empty line.
    fn txn(&self, r: &TxnResponse, hex: bool) -> Printed {
        let mut out = String::from(if r.succeeded() {
            "SUCCESS\n"
        } else {
            "FAILURE\n"
        });
        for op in r.op_responses() {
            out.push('\n');
            let text = match op {
                TxnOpResponse::Put(p) => self.put(&p, hex)?,
                TxnOpResponse::Get(g) => self.get(&g, hex, false)?,
                TxnOpResponse::Delete(d) => self.del(&d, hex)?,
                TxnOpResponse::Txn(t) => self.txn(&t, hex)?,
            };
            out.push_str(&text);
        }
        Ok(out)
    }

    /// Per event: its type, the previous pair (if asked), the pair.
    fn watch(&self, r: &WatchResponse, hex: bool) -> Printed {
        let mut out = String::new();
        for e in r.events() {
            out.push_str(match e.event_type() {
                EventType::Put => "PUT\n",
                EventType::Delete => "DELETE\n",
            });
            if let Some(prev) = e.prev_kv() {
                print_kv(&mut out, prev, hex, false);
            }
            if let Some(kv) = e.kv() {
                print_kv(&mut out, kv, hex, false);
            }
        }
        Ok(out)
    }

    fn lease_grant(&self, r: &LeaseGrantResponse) -> Printed {
        Ok(format!(
            "lease {:016x} granted with TTL({}s)\n",
            r.id(),
            r.ttl()
        ))
    }

    fn lease_revoke(&self, id: i64, _r: &LeaseRevokeResponse) -> Printed {
        Ok(format!("lease {id:016x} revoked\n"))
    }

    fn lease_time_to_live(&self, r: &LeaseTimeToLiveResponse, keys: bool) -> Printed {
        if r.granted_ttl() == 0 && r.ttl() == -1 {
            return Ok(format!("lease {:016x} already expired\n", r.id()));
        }
        let mut out = format!(
            "lease {:016x} granted with TTL({}s), remaining({}s)",
            r.id(),
            r.granted_ttl(),
            r.ttl()
        );
        if keys {
            let ks: Vec<String> = r
                .keys()
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            let _ = write!(out, ", attached keys([{}])", ks.join(" "));
        }
        out.push('\n');
        Ok(out)
    }

    fn lease_list(&self, r: &LeaseLeasesResponse) -> Printed {
        let mut out = format!("found {} leases\n", r.leases().len());
        for l in r.leases() {
            let _ = writeln!(out, "{:016x}", l.id());
        }
        Ok(out)
    }

    fn lease_keep_alive(&self, r: &LeaseKeepAliveResponse) -> Printed {
        Ok(format!(
            "lease {:016x} keepalived with TTL({})\n",
            r.id(),
            r.ttl()
        ))
    }

    /// Go's `%+v` of each `AlarmMember`.
    fn alarm(&self, r: &AlarmResponse) -> Printed {
        let mut out = String::new();
        for a in r.alarms() {
            let kind = match a.alarm() {
                etcd_client::AlarmType::None => "NONE",
                etcd_client::AlarmType::Nospace => "NOSPACE",
                etcd_client::AlarmType::Corrupt => "CORRUPT",
            };
            let _ = writeln!(out, "memberID:{} alarm:{kind} ", a.member_id());
        }
        Ok(out)
    }

    /// One line per endpoint (etcdctl 3.4 writes them to stderr: the
    /// `ctl` mode does so).
    fn endpoint_health(&self, all: &[EndpointHealth]) -> Printed {
        let mut out = String::new();
        for h in all {
            let _ = match &h.error {
                None => writeln!(
                    out,
                    "{} is healthy: successfully committed proposal: took = {}",
                    h.endpoint,
                    super::go_duration(h.took)
                ),
                Some(e) => writeln!(
                    out,
                    "{} is unhealthy: failed to commit proposal: {e}",
                    h.endpoint
                ),
            };
        }
        Ok(out)
    }

    fn endpoint_status(&self, all: &[EndpointStatus]) -> Printed {
        let mut out = String::new();
        for row in endpoint_status_rows(all).1 {
            let _ = writeln!(out, "{}", row.join(", "));
        }
        Ok(out)
    }

    fn endpoint_hash_kv(&self, all: &[EndpointHashKv]) -> Printed {
        let mut out = String::new();
        for row in endpoint_hash_kv_rows(all).1 {
            let _ = writeln!(out, "{}", row.join(", "));
        }
        Ok(out)
    }

    fn move_leader(&self, leader: u64, target: u64, _r: &MoveLeaderResponse) -> Printed {
        Ok(format!(
            "Leadership transferred from {leader:x} to {target:x}\n"
        ))
    }
}

/// etcdctl's `printKV`: the key (unless `value_only`), then the value,
/// each on its own line.
fn print_kv(out: &mut String, kv: &KeyValue, hex: bool, value_only: bool) {
    let show = |b: &[u8]| {
        if hex {
            hex_escaped(b)
        } else {
            String::from_utf8_lossy(b).into_owned()
        }
    };
    if !value_only {
        out.push_str(&show(kv.key()));
        out.push('\n');
    }
    out.push_str(&show(kv.value()));
    out.push('\n');
}

/// `Member <id> <verb> cluster <id>`, ids as etcdctl's `%16x`.
fn change(id: u64, verb: &str, header: Option<&etcd_client::ResponseHeader>) -> String {
    format!(
        "Member {id:>16x} {verb} cluster {:>16x}\n",
        cluster_id(header)
    )
}
