//! One printer per output format (`-w simple|json|table|fields`), one
//! method per response type, as etcdctl's `printer.go`: commands never
//! format by hand, so `member`, `ctl` and `backup` print alike. A method a
//! format does not support answers [`Unsupported`] (etcdctl's
//! `printerUnsupported`), which the modes report before changing anything.

pub mod auth;
mod fields;
mod json;
mod simple;
mod table;

use clap::ValueEnum;
use etcd_client::{
    AlarmResponse, DeleteResponse, GetResponse, HashKvResponse, LeaseGrantResponse,
    LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse,
    MemberAddResponse, MemberListResponse, MemberPromoteResponse, MemberRemoveResponse,
    MemberUpdateResponse, MoveLeaderResponse, PutResponse, StatusResponse, TxnResponse,
    WatchResponse,
};

pub use json::go_json_string;

use crate::core::snapshot::FileStatus;

/// An output format of etcdctl's `--write-out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One line per item / one sentence per change.
    Simple,
    /// The gRPC response as etcdctl's JSON.
    Json,
    /// etcdctl's ASCII table.
    Table,
    /// `"Field" : value` lines, etcdctl's `fields`.
    Fields,
}

impl OutputFormat {
    /// The name `-w` takes.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Simple => "simple",
            OutputFormat::Json => "json",
            OutputFormat::Table => "table",
            OutputFormat::Fields => "fields",
        }
    }
}

/// A format that cannot print a response type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{format} is not supported as output format of {command}; use {alternatives}")]
pub struct Unsupported {
    /// The format asked for.
    pub format: &'static str,
    /// The command, as in `member add`.
    pub command: &'static str,
    /// The formats that work, as in `simple or json`.
    pub alternatives: &'static str,
}

/// What a printer returns: the text to print on stdout, or why it cannot.
pub type Printed = Result<String, Unsupported>;

/// A response type's printer in one output format. Every method has a
/// default that refuses ([`Unsupported`]); each format implements the ones
/// etcdctl 3.4 implements for it.
pub trait Printer: Sync {
    /// The format this printer writes.
    fn format(&self) -> OutputFormat;

    /// Refuses `command` in this format (`alternatives`: what works).
    fn unsupported(&self, command: &'static str, alternatives: &'static str) -> Printed {
        Err(Unsupported {
            format: self.format().name(),
            command,
            alternatives,
        })
    }

    /// `member list`.
    fn member_list(&self, _r: &MemberListResponse) -> Printed {
        self.unsupported("member list", "simple, json, table or fields")
    }

    /// `member add` (the first line only in `simple`; the member mode adds
    /// how to start the new member).
    fn member_add(&self, _r: &MemberAddResponse) -> Printed {
        self.unsupported("member add", "simple or json")
    }

    /// `member remove` of member `id`.
    fn member_remove(&self, _id: u64, _r: &MemberRemoveResponse) -> Printed {
        self.unsupported("member remove", "simple or json")
    }

    /// `member update` of member `id`.
    fn member_update(&self, _id: u64, _r: &MemberUpdateResponse) -> Printed {
        self.unsupported("member update", "simple or json")
    }

    /// `member promote` of member `id`.
    fn member_promote(&self, _id: u64, _r: &MemberPromoteResponse) -> Printed {
        self.unsupported("member promote", "simple or json")
    }

    /// `snapshot status` of a file (etcdctl's `DBStatus`).
    fn snapshot_status(&self, _s: &FileStatus) -> Printed {
        self.unsupported("snapshot status", "simple, json, table or fields")
    }

    /// `get` (`hex`: keys and values as `\x`-escaped hex; `value_only`:
    /// `--print-value-only`).
    fn get(&self, _r: &GetResponse, _hex: bool, _value_only: bool) -> Printed {
        self.unsupported("get", "simple, json or fields")
    }

    /// `put`.
    fn put(&self, _r: &PutResponse, _hex: bool) -> Printed {
        self.unsupported("put", "simple, json or fields")
    }

    /// `del`.
    fn del(&self, _r: &DeleteResponse, _hex: bool) -> Printed {
        self.unsupported("del", "simple, json or fields")
    }

    /// `txn`.
    fn txn(&self, _r: &TxnResponse, _hex: bool) -> Printed {
        self.unsupported("txn", "simple, json or fields")
    }

    /// One watch response (its events).
    fn watch(&self, _r: &WatchResponse, _hex: bool) -> Printed {
        self.unsupported("watch", "simple, json or fields")
    }

    /// `lease grant`.
    fn lease_grant(&self, _r: &LeaseGrantResponse) -> Printed {
        self.unsupported("lease grant", "simple, json or fields")
    }

    /// `lease revoke` of lease `id`.
    fn lease_revoke(&self, _id: i64, _r: &LeaseRevokeResponse) -> Printed {
        self.unsupported("lease revoke", "simple, json or fields")
    }

    /// `lease timetolive` (`keys`: `--keys`).
    fn lease_time_to_live(&self, _r: &LeaseTimeToLiveResponse, _keys: bool) -> Printed {
        self.unsupported("lease timetolive", "simple, json or fields")
    }

    /// `lease list`.
    fn lease_list(&self, _r: &LeaseLeasesResponse) -> Printed {
        self.unsupported("lease list", "simple, json or fields")
    }

    /// One `lease keep-alive` answer.
    fn lease_keep_alive(&self, _r: &LeaseKeepAliveResponse) -> Printed {
        self.unsupported("lease keep-alive", "simple, json or fields")
    }

    /// `alarm list` / `alarm disarm`.
    fn alarm(&self, _r: &AlarmResponse) -> Printed {
        self.unsupported("alarm", "simple, json or fields")
    }

    /// `endpoint health`.
    fn endpoint_health(&self, _r: &[EndpointHealth]) -> Printed {
        self.unsupported("endpoint health", "simple, json or table")
    }

    /// `endpoint status`.
    fn endpoint_status(&self, _r: &[EndpointStatus]) -> Printed {
        self.unsupported("endpoint status", "simple, json, table or fields")
    }

    /// `endpoint hashkv`.
    fn endpoint_hash_kv(&self, _r: &[EndpointHashKv]) -> Printed {
        self.unsupported("endpoint hashkv", "simple, json, table or fields")
    }

    /// `move-leader` from `leader` to `target`.
    fn move_leader(&self, _leader: u64, _target: u64, _r: &MoveLeaderResponse) -> Printed {
        self.unsupported("move-leader", "simple")
    }
}

/// One endpoint's `endpoint health` probe (etcdctl's `epHealth`).
#[derive(Debug, Clone)]
pub struct EndpointHealth {
    /// The endpoint as given.
    pub endpoint: String,
    /// How long the probe took.
    pub took: std::time::Duration,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// One endpoint's `Status` (etcdctl's `epStatus`).
#[derive(Debug, Clone)]
pub struct EndpointStatus {
    /// The endpoint as given.
    pub endpoint: String,
    /// Its answer.
    pub status: StatusResponse,
}

/// One endpoint's `HashKV` (etcdctl's `epHashKV`).
#[derive(Debug, Clone)]
pub struct EndpointHashKv {
    /// The endpoint as given.
    pub endpoint: String,
    /// Its answer.
    pub hash: HashKvResponse,
}

/// etcdctl's `makeEndpointStatusTable`.
pub(crate) fn endpoint_status_rows(
    all: &[EndpointStatus],
) -> ([&'static str; 10], Vec<[String; 10]>) {
    let rows = all
        .iter()
        .map(|e| {
            let s = &e.status;
            let id = s.header().map_or(0, |h| h.member_id());
            [
                e.endpoint.clone(),
                format!("{id:x}"),
                s.version().to_string(),
                humanize_bytes(u64::try_from(s.db_size()).unwrap_or(0)),
                (s.leader() == id).to_string(),
                s.is_learner().to_string(),
                s.raft_term().to_string(),
                s.raft_index().to_string(),
                s.raft_applied_index().to_string(),
                s.errors().join(", "),
            ]
        })
        .collect();
    (
        [
            "ENDPOINT",
            "ID",
            "VERSION",
            "DB SIZE",
            "IS LEADER",
            "IS LEARNER",
            "RAFT TERM",
            "RAFT INDEX",
            "RAFT APPLIED INDEX",
            "ERRORS",
        ],
        rows,
    )
}

/// etcdctl's `makeEndpointHashKVTable`.
pub(crate) fn endpoint_hash_kv_rows(
    all: &[EndpointHashKv],
) -> ([&'static str; 2], Vec<[String; 2]>) {
    (
        ["ENDPOINT", "HASH"],
        all.iter()
            .map(|e| [e.endpoint.clone(), e.hash.hash().to_string()])
            .collect(),
    )
}

/// A duration as Go's `time.Duration.String` writes it (`1.234567ms`,
/// `2.5s`, `850µs`).
pub fn go_duration(d: std::time::Duration) -> String {
    let ns = d.as_nanos();
    let trim = |v: String| {
        if v.contains('.') {
            v.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            v
        }
    };
    if ns == 0 {
        "0s".to_string()
    } else if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{}µs", trim(format!("{:.3}", ns as f64 / 1e3)))
    } else if ns < 1_000_000_000 {
        format!("{}ms", trim(format!("{:.6}", ns as f64 / 1e6)))
    } else {
        format!("{}s", trim(format!("{:.9}", ns as f64 / 1e9)))
    }
}

/// `bytes` as etcdctl's `--hex` prints them: `\x` before each byte's two
/// hex digits.
pub fn hex_escaped(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\x{b:02x}")).collect()
}

/// etcdctl's `makeDBStatusTable`: the header and the one row (hash in hex,
/// size as go-humanize writes it).
pub(crate) fn db_status_row(s: &FileStatus) -> ([&'static str; 4], [String; 4]) {
    (
        ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
        [
            format!("{:x}", s.hash),
            s.revision.to_string(),
            s.total_keys.to_string(),
            humanize_bytes(s.total_size),
        ],
    )
}

/// A byte count as go-humanize's `Bytes` writes it (SI units: `57 kB`,
/// `1.1 GB`; one decimal below 10 of a unit), as etcdctl prints sizes.
pub fn humanize_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let exp = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let exp = exp.min(UNITS.len() - 1);
    let value = ((n as f64) / 1000f64.powi(exp as i32) * 10.0 + 0.5).floor() / 10.0;
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[exp])
    } else {
        format!("{value:.0} {}", UNITS[exp])
    }
}

/// The printer of `format`.
pub fn printer(format: OutputFormat) -> &'static dyn Printer {
    match format {
        OutputFormat::Simple => &simple::SimplePrinter,
        OutputFormat::Json => &json::JsonPrinter,
        OutputFormat::Table => &table::TablePrinter,
        OutputFormat::Fields => &fields::FieldsPrinter,
    }
}

/// Column titles of etcdctl's member table (tablewriter upper-cases them).
pub(crate) const TABLE_HEADER: [&str; 6] = [
    "ID",
    "STATUS",
    "NAME",
    "PEER ADDRS",
    "CLIENT ADDRS",
    "IS LEARNER",
];

/// etcdctl's `makeMemberListTable` rows: id in hex, started/unstarted (a
/// member that never started has no name yet), name, peer and client URLs
/// joined by commas, is-learner.
pub(crate) fn member_rows(members: &[etcd_client::Member]) -> Vec<[String; 6]> {
    members
        .iter()
        .map(|m| {
            let status = if m.name().is_empty() {
                "unstarted"
            } else {
                "started"
            };
            [
                format!("{:x}", m.id()),
                status.to_string(),
                m.name().to_string(),
                m.peer_urls().join(","),
                m.client_urls().join(","),
                m.is_learner().to_string(),
            ]
        })
        .collect()
}

/// The cluster id of a response header (0 without one).
pub(crate) fn cluster_id(header: Option<&etcd_client::ResponseHeader>) -> u64 {
    header.map_or(0, etcd_client::ResponseHeader::cluster_id)
}

/// A string as Go's `%q` writes it (`strconv.Quote`): in double quotes,
/// `"` and `\` escaped, `\a \b \f \n \r \t \v` short, other control
/// characters as `\xNN` (below 0x80) or `\uXXXX`, printable text as is.
pub fn go_quote(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c.is_control() && u32::from(c) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() => {
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
    fn sizes_print_as_go_humanize_does() {
        for (n, text) in [
            (0, "0 B"),
            (9, "9 B"),
            (10, "10 B"),
            (999, "999 B"),
            (1000, "1.0 kB"),
            (24_576, "25 kB"),
            (57_344, "57 kB"),
            (1_500_000, "1.5 MB"),
            (1_073_741_824, "1.1 GB"),
        ] {
            assert_eq!(humanize_bytes(n), text, "{n}");
        }
    }

    #[test]
    fn go_quote_escapes_like_strconv_quote() {
        assert_eq!(go_quote("n1"), "\"n1\"");
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\x01é\"");
    }
}
