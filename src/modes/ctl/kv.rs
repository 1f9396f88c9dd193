//! `get`, `put`, `del`, `txn` and `compaction`, with etcdctl 3.4's flags
//! (`get --count-only` from 3.5) and checks.

use std::io::BufRead as _;

use clap::Args;
use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
};

use super::{Ctx, Failure};
use crate::modes::common::output::OutputFormat;
use crate::modes::ExitCode;

/// `get`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// The key (or the start of the range)
    #[arg(id = "target_key", value_name = "KEY")]
    pub key: Option<String>,
    /// The end of the range [key, range_end)
    pub range_end: Option<String>,
    /// Linearizable(l) or Serializable(s)
    #[arg(long, default_value = "l")]
    pub consistency: String,
    /// Order of results; ASCEND or DESCEND (ASCEND by default)
    #[arg(long, default_value = "")]
    pub order: String,
    /// Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION
    #[arg(long, default_value = "")]
    pub sort_by: String,
    /// Maximum number of results
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Get keys with matching prefix
    #[arg(long)]
    pub prefix: bool,
    /// Get keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    pub from_key: bool,
    /// Specify the kv revision
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Get only the keys
    #[arg(long)]
    pub keys_only: bool,
    /// Get only the count (with --write-out=fields)
    #[arg(long)]
    pub count_only: bool,
    /// Only write values when using the "simple" output format
    #[arg(long)]
    pub print_value_only: bool,
}

/// `put`.
#[derive(Debug, Clone, Args)]
pub struct PutArgs {
    /// The key
    #[arg(id = "target_key", value_name = "KEY")]
    pub key: Option<String>,
    /// The value (read from stdin when absent)
    pub value: Option<String>,
    /// lease ID (in hexadecimal) to attach to the key
    #[arg(long, default_value = "0")]
    pub lease: String,
    /// return the previous key-value pair before modification
    #[arg(long)]
    pub prev_kv: bool,
    /// updates the key using its current value
    #[arg(long)]
    pub ignore_value: bool,
    /// updates the key using its current lease
    #[arg(long)]
    pub ignore_lease: bool,
}

/// `del`.
#[derive(Debug, Clone, Args)]
pub struct DelArgs {
    /// The key (or the start of the range)
    #[arg(id = "target_key", value_name = "KEY")]
    pub key: Option<String>,
    /// The end of the range [key, range_end)
    pub range_end: Option<String>,
    /// delete keys with matching prefix
    #[arg(long)]
    pub prefix: bool,
    /// return deleted key-value pairs
    #[arg(long)]
    pub prev_kv: bool,
    /// delete keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    pub from_key: bool,
}

/// `txn`.
#[derive(Debug, Clone, Args)]
pub struct TxnArgs {
    /// Input transaction in interactive mode (prompts for each part)
    #[arg(short = 'i', long)]
    pub interactive: bool,
}

/// `compaction`.
#[derive(Debug, Clone, Args)]
pub struct CompactionArgs {
    /// The revision to compact at
    pub revision: Option<String>,
    /// 'true' to wait for compaction to physically remove all old revisions
    #[arg(long)]
    pub physical: bool,
}

/// The request key: `--from-key` with an empty key means every key
/// (etcdctl sends `\0`).
fn key_bytes(key: String, from_key: bool) -> Vec<u8> {
    if from_key && key.is_empty() {
        vec![0]
    } else {
        key.into_bytes()
    }
}

fn bad_args(m: impl Into<String>) -> Failure {
    Failure::new(ExitCode::BAD_ARGS, m)
}

/// `get`: etcdctl's `getCommandFunc` checks, then one Range.
pub async fn get(ctx: &Ctx, a: GetArgs) -> Result<(), Failure> {
    let Some(key) = a.key.clone() else {
        return Err(bad_args(
            "get command needs one argument as key and an optional argument as range_end",
        ));
    };
    if a.prefix && a.from_key {
        return Err(bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    if a.keys_only && a.count_only {
        return Err(bad_args(
            "`--keys-only` and `--count-only` cannot be set at the same time, choose one",
        ));
    }
    if a.count_only && ctx.printer.format() != OutputFormat::Fields {
        return Err(bad_args("--count-only is only for `--write-out=fields`"));
    }
    if a.print_value_only && ctx.printer.format() != OutputFormat::Simple {
        return Err(bad_args(
            "--print-value-only is only for `--write-out=simple`",
        ));
    }
    let mut opts = GetOptions::new();
    match a.consistency.as_str() {
        "l" => {}
        "s" => opts = opts.with_serializable(),
        other => {
            return Err(bad_args(format!("unknown consistency flag {other:?}")));
        }
    }
    if let Some(end) = &a.range_end {
        if a.prefix || a.from_key {
            return Err(bad_args("too many arguments, only accept one argument when `--prefix` or `--from-key` is set."));
        }
        opts = opts.with_range(end.clone());
    }
    opts = opts.with_limit(a.limit);
    if a.rev > 0 {
        opts = opts.with_revision(a.rev);
    }
    let order = match a.order.as_str() {
        "" => None,
        "ASCEND" => Some(SortOrder::Ascend),
        "DESCEND" => Some(SortOrder::Descend),
        other => return Err(bad_args(format!("bad sort order {other:?}"))),
    };
    let target = match a.sort_by.as_str() {
        "" | "KEY" => SortTarget::Key,
        "CREATE" => SortTarget::Create,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        "VERSION" => SortTarget::Version,
        other => return Err(bad_args(format!("bad sort target {other:?}"))),
    };
    if order.is_some() || !a.sort_by.is_empty() {
        opts = opts.with_sort(target, order.unwrap_or(SortOrder::Ascend));
    }
    if a.prefix {
        opts = opts.with_prefix();
    }
    if a.from_key {
        opts = opts.with_from_key();
    }
    if a.keys_only {
        opts = opts.with_keys_only();
    }
    if a.count_only {
        opts = opts.with_count_only();
    }
    let key = key_bytes(key, a.from_key);
    let mut c = ctx.connect().await?;
    let resp = c.get(key, Some(opts)).await.map_err(|e| ctx.failed(e))?;
    ctx.print(ctx.printer.get(&resp, ctx.hex, a.print_value_only))
}

/// `put`: the value from the argument or stdin, the lease in hex.
pub async fn put(ctx: &Ctx, a: PutArgs) -> Result<(), Failure> {
    let needs = "put command needs 1 argument and input from stdin or 2 arguments";
    let Some(key) = a.key.clone() else {
        return Err(bad_args(needs));
    };
    let value = match a.value {
        Some(v) => v,
        None if a.ignore_value => String::new(),
        None => {
            // etcdctl's `argOrStdin`: all of stdin, as is.
            let mut all = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut all)
                .map_err(|e| bad_args(e.to_string()))?;
            if all.is_empty() {
                return Err(bad_args(
                    "put command needs 1 argument and input from stdin or 2 arguments",
                ));
            }
            all
        }
    };
    let lease = i64::from_str_radix(&a.lease, 16).map_err(|_| {
        bad_args(format!(
            "bad lease ID ({}), expecting ID in Hex",
            super::go_parse_int_error(&a.lease, 16)
        ))
    })?;
    if a.ignore_value && !value.is_empty() {
        return Err(bad_args("value is provided with --ignore-value flag"));
    }
    if a.ignore_lease && lease != 0 {
        return Err(bad_args("lease is provided with --ignore-lease flag"));
    }
    let mut opts = PutOptions::new();
    if lease != 0 {
        opts = opts.with_lease(lease);
    }
    if a.prev_kv {
        opts = opts.with_prev_key();
    }
    if a.ignore_value {
        opts = opts.with_ignore_value();
    }
    if a.ignore_lease {
        opts = opts.with_ignore_lease();
    }
    let mut c = ctx.connect().await?;
    let resp = c
        .put(key, value, Some(opts))
        .await
        .map_err(|e| ctx.failed(e))?;
    ctx.print(ctx.printer.put(&resp, ctx.hex))
}

/// `del`.
pub async fn del(ctx: &Ctx, a: DelArgs) -> Result<(), Failure> {
    let Some(key) = a.key.clone() else {
        return Err(bad_args(
            "del command needs one argument as key and an optional argument as range_end",
        ));
    };
    if a.prefix && a.from_key {
        return Err(bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    let mut opts = DeleteOptions::new();
    if let Some(end) = &a.range_end {
        if a.prefix || a.from_key {
            return Err(bad_args("too many arguments, only accept one argument when `--prefix` or `--from-key` is set."));
        }
        opts = opts.with_range(end.clone());
    }
    if a.prefix {
        opts = opts.with_prefix();
    }
    if a.from_key {
        opts = opts.with_from_key();
    }
    if a.prev_kv {
        opts = opts.with_prev_key();
    }
    let key = key_bytes(key, a.from_key);
    let mut c = ctx.connect().await?;
    let resp = c.delete(key, Some(opts)).await.map_err(|e| ctx.failed(e))?;
    ctx.print(ctx.printer.del(&resp, ctx.hex))
}

/// `compaction REV`.
pub async fn compaction(ctx: &Ctx, a: CompactionArgs) -> Result<(), Failure> {
    let Some(text) = a.revision else {
        return Err(bad_args("compaction command needs 1 argument"));
    };
    let rev: i64 = text
        .parse()
        .map_err(|_| bad_args(super::go_parse_int_error(&text, 10)))?;
    let mut c = ctx.connect().await?;
    let opts = a
        .physical
        .then(|| etcd_client::CompactionOptions::new().with_physical());
    c.compact(rev, opts).await.map_err(|e| ctx.failed(e))?;
    println!("compacted revision {rev}");
    Ok(())
}

/// `txn`: etcdctl's three blocks from stdin (compares, success requests,
/// failure requests), each ended by an empty line; `-i` prompts for each.
pub async fn txn(ctx: &Ctx, a: TxnArgs) -> Result<(), Failure> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let invalid = |m: String| Failure::new(ExitCode::INVALID_INPUT, m);
    let mut block = |prompt: &str| -> Result<Vec<String>, Failure> {
        if a.interactive {
            println!("{prompt}");
        }
        let mut out = Vec::new();
        for line in lines.by_ref() {
            let line = line.map_err(|e| invalid(e.to_string()))?;
            if line.is_empty() {
                break;
            }
            out.push(line);
        }
        Ok(out)
    };
    let compares = block("compares:")?
        .iter()
        .map(|l| parse_compare(l).map_err(invalid))
        .collect::<Result<Vec<_>, _>>()?;
    let success = block("success requests (get, put, del):")?
        .iter()
        .map(|l| parse_request(l).map_err(invalid))
        .collect::<Result<Vec<_>, _>>()?;
    let failure = block("failure requests (get, put, del):")?
        .iter()
        .map(|l| parse_request(l).map_err(invalid))
        .collect::<Result<Vec<_>, _>>()?;
    let txn = Txn::new().when(compares).and_then(success).or_else(failure);
    let mut c = ctx.connect().await?;
    let resp = c.txn(txn).await.map_err(|e| ctx.failed(e))?;
    ctx.print(ctx.printer.txn(&resp, ctx.hex))
}

/// Splits a txn line into words as etcdctl's `argify` does: double-quoted
/// strings (Go escapes) are one word, other words end at spaces.
pub(super) fn argify(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some('n') => word.push('\n'),
                        Some('t') => word.push('\t'),
                        Some('r') => word.push('\r'),
                        Some(other) => word.push(other),
                        None => return Err(format!("bad quoting in {line:?}")),
                    },
                    other => word.push(other),
                }
            }
            if !closed {
                return Err(format!("bad quoting in {line:?}"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
    Ok(out)
}

/// A compare line: `KEY_TARGET("key") OP "value"`, the targets `c`/`create`,
/// `m`/`mod`, `val`/`value`, `ver`/`version`, `lease` (etcdctl's
/// `parseCompare`).
fn parse_compare(line: &str) -> Result<Compare, String> {
    let bad = || format!("malformed comparison: {line}; got {line:?}");
    let open = line.find('(').ok_or_else(bad)?;
    let close = line.find(')').ok_or_else(bad)?;
    let target = line[..open].trim();
    let key_part = &line[open + 1..close];
    let key = argify(key_part)?.into_iter().next().ok_or_else(bad)?;
    let rest = argify(&line[close + 1..])?;
    let [op, value] = rest.as_slice() else {
        return Err(bad());
    };
    let op = match op.as_str() {
        "=" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        "<" => CompareOp::Less,
        ">" => CompareOp::Greater,
        _ => return Err(format!("unknown op in {line:?}")),
    };
    let number = |v: &str| {
        v.parse::<i64>()
            .map_err(|e| format!("invalid txn compare request: {line}: {e}"))
    };
    Ok(match target {
        "ver" | "version" => Compare::version(key, op, number(value)?),
        "c" | "create" => Compare::create_revision(key, op, number(value)?),
        "m" | "mod" => Compare::mod_revision(key, op, number(value)?),
        "val" | "value" => Compare::value(key, op, value.clone()),
        "lease" => Compare::lease(
            key,
            op,
            i64::from_str_radix(value, 16)
                .map_err(|e| format!("invalid txn compare request: {line}: {e}"))?,
        ),
        _ => return Err(format!("malformed comparison: {line}; got {line:?}")),
    })
}

/// A request line: `get`, `put` or `del` with their own flags.
fn parse_request(line: &str) -> Result<TxnOp, String> {
    let words = argify(line)?;
    let Some((cmd, args)) = words.split_first() else {
        return Err(format!("invalid txn request: {line}"));
    };
    let flag = |name: &str| {
        args.iter()
            .any(|a| a == name || a == &format!("{name}=true"))
    };
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    match cmd.as_str() {
        "get" => {
            let key = positional
                .first()
                .ok_or_else(|| format!("invalid txn request: {line}"))?;
            let mut o = GetOptions::new();
            if let Some(end) = positional.get(1) {
                o = o.with_range(end.as_str());
            }
            if flag("--prefix") {
                o = o.with_prefix();
            }
            if flag("--keys-only") {
                o = o.with_keys_only();
            }
            Ok(TxnOp::get(key.as_str(), Some(o)))
        }
        "put" => {
            let (Some(key), Some(value)) = (positional.first(), positional.get(1)) else {
                return Err(format!("invalid txn request: {line}"));
            };
            let mut o = PutOptions::new();
            if flag("--prev-kv") {
                o = o.with_prev_key();
            }
            if let Some(l) = args.iter().find_map(|a| a.strip_prefix("--lease=")) {
                let id = i64::from_str_radix(l, 16)
                    .map_err(|e| format!("invalid txn request: {line}: {e}"))?;
                o = o.with_lease(id);
            }
            Ok(TxnOp::put(key.as_str(), value.as_str(), Some(o)))
        }
        "del" | "delete" => {
            let key = positional
                .first()
                .ok_or_else(|| format!("invalid txn request: {line}"))?;
            let mut o = DeleteOptions::new();
            if let Some(end) = positional.get(1) {
                o = o.with_range(end.as_str());
            }
            if flag("--prefix") {
                o = o.with_prefix();
            }
            if flag("--prev-kv") {
                o = o.with_prev_key();
            }
            Ok(TxnOp::delete(key.as_str(), Some(o)))
        }
        other => Err(format!(
            "invalid txn request: {other} is not get, put or del"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_lines_split_as_etcdctl_argify() {
        assert_eq!(
            argify(r#"put "a key" "a \"v\"" --prev-kv"#).unwrap(),
            vec!["put", "a key", "a \"v\"", "--prev-kv"]
        );
        assert!(argify(r#"put "open"#).is_err());
        assert!(parse_compare(r#"mod("k") > "3""#).is_ok());
        assert!(parse_compare(r#"value("k") = "v""#).is_ok());
        assert!(parse_compare(r#"bogus("k") = "v""#).is_err());
        assert!(parse_request("get k --prefix").is_ok());
        assert!(parse_request("frob k").is_err());
    }
}
