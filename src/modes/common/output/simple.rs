//! `-w simple`: etcdctl's plain lines.

use etcd_client::{
    MemberAddResponse, MemberListResponse, MemberPromoteResponse, MemberRemoveResponse,
    MemberUpdateResponse,
};

use super::{cluster_id, db_status_row, member_rows, OutputFormat, Printed, Printer};
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
}

/// `Member <id> <verb> cluster <id>`, ids as etcdctl's `%16x`.
fn change(id: u64, verb: &str, header: Option<&etcd_client::ResponseHeader>) -> String {
    format!(
        "Member {id:>16x} {verb} cluster {:>16x}\n",
        cluster_id(header)
    )
}
