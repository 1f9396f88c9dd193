//! One printer per output format (`-w simple|json|table|fields`), one
//! method per response type, as etcdctl's `printer.go`: commands never
//! format by hand, so `member`, `ctl` and `backup` print alike. A method a
//! format does not support answers [`Unsupported`] (etcdctl's
//! `printerUnsupported`), which the modes report before changing anything.

mod fields;
mod json;
mod simple;
mod table;

use clap::ValueEnum;
use etcd_client::{
    MemberAddResponse, MemberListResponse, MemberPromoteResponse, MemberRemoveResponse,
    MemberUpdateResponse,
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
pub trait Printer {
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
