//! `-w table`: etcdctl's ASCII tables, drawn as olekukonko/tablewriter
//! (built into etcdctl 3.4) draws them with its defaults.

use std::fmt::Write as _;

use etcd_client::MemberListResponse;
use unicode_width::UnicodeWidthStr;

use super::{
    db_status_row, endpoint_hash_kv_rows, endpoint_status_rows, go_duration, member_rows,
    EndpointHashKv, EndpointHealth, EndpointStatus, OutputFormat, Printed, Printer, TABLE_HEADER,
};
use crate::core::snapshot::FileStatus;

/// etcdctl's `tablePrinter`.
pub struct TablePrinter;

impl Printer for TablePrinter {
    fn format(&self) -> OutputFormat {
        OutputFormat::Table
    }

    fn member_list(&self, r: &MemberListResponse) -> Printed {
        let rows: Vec<Vec<String>> = member_rows(r.members())
            .into_iter()
            .map(|row| row.to_vec())
            .collect();
        let header: Vec<String> = TABLE_HEADER.iter().map(|s| s.to_string()).collect();
        Ok(draw_table(&header, &rows))
    }

    fn endpoint_health(&self, all: &[EndpointHealth]) -> Printed {
        let header: Vec<String> = ["ENDPOINT", "HEALTH", "TOOK", "ERROR"]
            .iter()
            .map(|h| h.to_string())
            .collect();
        let rows: Vec<Vec<String>> = all
            .iter()
            .map(|h| {
                vec![
                    h.endpoint.clone(),
                    h.error.is_none().to_string(),
                    go_duration(h.took),
                    h.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        Ok(draw_table(&header, &rows))
    }

    fn endpoint_status(&self, all: &[EndpointStatus]) -> Printed {
        let (header, rows) = endpoint_status_rows(all);
        let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        let rows: Vec<Vec<String>> = rows.into_iter().map(|r| r.to_vec()).collect();
        Ok(draw_table(&header, &rows))
    }

    fn endpoint_hash_kv(&self, all: &[EndpointHashKv]) -> Printed {
        let (header, rows) = endpoint_hash_kv_rows(all);
        let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        let rows: Vec<Vec<String>> = rows.into_iter().map(|r| r.to_vec()).collect();
        Ok(draw_table(&header, &rows))
    }

    fn snapshot_status(&self, s: &FileStatus) -> Printed {
        let (header, row) = db_status_row(s);
        let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        Ok(draw_table(&header, &[row.to_vec()]))
    }
}

/// tablewriter's widest cell before it wraps text (`MAX_ROW_WIDTH`).
const TABLE_WRAP_WIDTH: usize = 30;

/// Draws a table the way olekukonko/tablewriter (as built into etcdctl 3.4)
/// does with its defaults: headers centred, cells right-aligned, one space
/// of padding, `+`/`-`/`|` borders, and cells wider than 30 columns wrapped
/// at spaces to the column's width *at the time the row was added* (so an
/// earlier row may wrap narrower than a later one widens the column), words
/// never broken. Widths are display widths (East Asian wide = 2).
pub fn draw_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header
        .iter()
        .map(|h| h.width().min(TABLE_WRAP_WIDTH))
        .collect();
    // Each row as its cells' lines, measured in the order rows were added.
    let mut wrapped_rows: Vec<Vec<Vec<String>>> = Vec::new();
    for row in rows {
        let mut cells = Vec::new();
        for (col, cell) in row.iter().enumerate() {
            let w = cell.width().min(TABLE_WRAP_WIDTH);
            if widths[col] < w {
                widths[col] = w;
            }
            let lines = wrap_string(cell, widths[col]);
            let widest = lines.iter().map(|l| l.width()).max().unwrap_or(0);
            if widest > widths[col] {
                widths[col] = widest;
            }
            cells.push(lines);
        }
        wrapped_rows.push(cells);
    }

    let mut out = String::new();
    let border = {
        let mut line = String::from("+");
        for w in &widths {
            line.push_str(&"-".repeat(w + 2));
            line.push('+');
        }
        line.push('\n');
        line
    };
    out.push_str(&border);
    out.push('|');
    for (h, w) in header.iter().zip(&widths) {
        let gap = w.saturating_sub(h.width());
        let left = gap / 2;
        let _ = write!(
            out,
            " {}{}{} |",
            " ".repeat(left),
            h,
            " ".repeat(gap - left)
        );
    }
    out.push('\n');
    out.push_str(&border);
    for cells in &wrapped_rows {
        let height = cells.iter().map(Vec::len).max().unwrap_or(1);
        for line_no in 0..height {
            out.push('|');
            for (lines, w) in cells.iter().zip(&widths) {
                let text = lines.get(line_no).map_or("", String::as_str);
                let _ = write!(
                    out,
                    " {}{} |",
                    " ".repeat(w.saturating_sub(text.width())),
                    text
                );
            }
            out.push('\n');
        }
    }
    out.push_str(&border);
    out
}

/// tablewriter's `WrapString`: split at single spaces (newlines count as
/// spaces), then break into lines of at most `limit` columns (or the widest
/// word) with minimal raggedness.
fn wrap_string(text: &str, limit: usize) -> Vec<String> {
    let replaced = text.replace('\n', " ");
    let words: Vec<&str> = replaced.split(' ').collect();
    let limit = words.iter().map(|w| w.width()).fold(limit, usize::max);
    wrap_words(&words, 1, limit, 100_000)
        .into_iter()
        .map(|line| line.join(" "))
        .collect()
}

/// tablewriter's `WrapWords` (minimal raggedness: the sum over lines of the
/// squared gap to `limit`, plus `penalty` for a line over the limit).
fn wrap_words<'a>(
    words: &[&'a str],
    space: usize,
    limit: usize,
    penalty: i64,
) -> Vec<Vec<&'a str>> {
    let n = words.len();
    if n == 0 {
        return vec![Vec::new()];
    }
    // length[i][j]: width of words i..=j on one line.
    let mut length = vec![vec![0usize; n]; n];
    for i in 0..n {
        length[i][i] = words[i].width();
        for j in i + 1..n {
            length[i][j] = length[i][j - 1] + space + words[j].width();
        }
    }
    let mut next_break = vec![0usize; n];
    let mut cost = vec![i64::from(i32::MAX); n];
    for i in (0..n).rev() {
        if length[i][n - 1] <= limit {
            cost[i] = 0;
            next_break[i] = n;
        } else {
            for j in i + 1..n {
                let gap = limit as i64 - length[i][j - 1] as i64;
                let mut c = gap * gap + cost[j];
                if length[i][j - 1] > limit {
                    c += penalty;
                }
                if c < cost[i] {
                    cost[i] = c;
                    next_break[i] = j;
                }
            }
        }
    }
    let mut lines = Vec::new();
    let mut i = 0;
    while i < n {
        lines.push(words[i..next_break[i]].to_vec());
        i = next_break[i];
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[&[&str]]) -> String {
        let header: Vec<String> = TABLE_HEADER.iter().map(|s| s.to_string()).collect();
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .collect();
        draw_table(&header, &rows)
    }

    // The expected tables below were printed by etcdctl 3.4.23
    // (`member list -w table`) against etcd 3.4.23.

    #[test]
    fn table_matches_etcdctl() {
        let got = table(&[
            &[
                "31cf1f08273efda0",
                "started",
                "n1",
                "http://127.0.0.1:41801",
                "http://127.0.0.1:41791",
                "false",
            ],
            &[
                "94cb1b6877d34408",
                "unstarted",
                "",
                "http://127.0.0.1:41805,http://127.0.0.2:41805",
                "",
                "true",
            ],
        ]);
        let want = "\
+------------------+-----------+------+-----------------------------------------------+------------------------+------------+
|        ID        |  STATUS   | NAME |                  PEER ADDRS                   |      CLIENT ADDRS      | IS LEARNER |
+------------------+-----------+------+-----------------------------------------------+------------------------+------------+
| 31cf1f08273efda0 |   started |   n1 |                        http://127.0.0.1:41801 | http://127.0.0.1:41791 |      false |
| 94cb1b6877d34408 | unstarted |      | http://127.0.0.1:41805,http://127.0.0.2:41805 |                        |       true |
+------------------+-----------+------+-----------------------------------------------+------------------------+------------+
";
        assert_eq!(got, want);
    }

    #[test]
    fn table_wraps_long_names_like_etcdctl() {
        let got = table(&[&[
            "907b737df2fb699",
            "started",
            "member with a rather long name beyond thirty",
            "http://127.0.0.1:41991",
            "http://127.0.0.1:41891",
            "false",
        ]]);
        let want = "\
+-----------------+---------+--------------------------------+------------------------+------------------------+------------+
|       ID        | STATUS  |              NAME              |       PEER ADDRS       |      CLIENT ADDRS      | IS LEARNER |
+-----------------+---------+--------------------------------+------------------------+------------------------+------------+
| 907b737df2fb699 | started | member with a rather long name | http://127.0.0.1:41991 | http://127.0.0.1:41891 |      false |
|                 |         |                  beyond thirty |                        |                        |            |
+-----------------+---------+--------------------------------+------------------------+------------------------+------------+
";
        assert_eq!(got, want);
    }

    #[test]
    fn table_counts_wide_characters_twice() {
        let got = table(&[&[
            "2907a86c7d86317f",
            "started",
            "節點 wide é",
            "http://127.0.0.1:41992",
            "http://127.0.0.1:41892",
            "false",
        ]]);
        let want = "\
+------------------+---------+-------------+------------------------+------------------------+------------+
|        ID        | STATUS  |    NAME     |       PEER ADDRS       |      CLIENT ADDRS      | IS LEARNER |
+------------------+---------+-------------+------------------------+------------------------+------------+
| 2907a86c7d86317f | started | 節點 wide é | http://127.0.0.1:41992 | http://127.0.0.1:41892 |      false |
+------------------+---------+-------------+------------------------+------------------------+------------+
";
        assert_eq!(got, want);
    }
}
