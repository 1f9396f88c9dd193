//! The seeds' v2-era commands on the v3 API, with `/`-separated keys taken
//! as directories: a directory is every key under `DIR/` (and `mkdir`
//! writes the empty marker key `DIR/`); a TTL is a lease of that many
//! seconds. Errors use etcd v2's numbered words (`100: Key not found`,
//! `105: Key already exists`) with exit code 4, as the v2 etcdctl.

use clap::Args;
use etcd_client::{
    Compare, CompareOp, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};

use super::{Ctx, Failure};
use crate::modes::ExitCode;

/// `ls [DIR]`.
#[derive(Debug, Clone, Args)]
pub struct LsArgs {
    /// The directory (default /)
    #[arg(value_name = "DIR")]
    pub dir: Option<String>,
    /// List everything under it, not only its direct children
    #[arg(short = 'r', long)]
    pub recursive: bool,
}

/// `set`, `mk` and `update`: a key, a value and an optional TTL.
#[derive(Debug, Clone, Args)]
pub struct SetArgs {
    /// The key
    #[arg(value_name = "KEY")]
    pub path: String,
    /// The value
    pub value: String,
    /// Time to live, seconds (0: forever)
    #[arg(long, default_value_t = 0)]
    pub ttl: i64,
}

/// `mkdir DIR`.
#[derive(Debug, Clone, Args)]
pub struct MkdirArgs {
    /// The directory
    #[arg(value_name = "DIR")]
    pub path: String,
}

/// `rm KEY`.
#[derive(Debug, Clone, Args)]
pub struct RmArgs {
    /// The key or directory
    #[arg(value_name = "KEY")]
    pub path: String,
    /// Remove a directory and everything under it
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Remove an empty directory (its marker key)
    #[arg(long)]
    pub dir: bool,
}

/// `exec-watch KEY -- COMMAND…`.
#[derive(Debug, Clone, Args)]
pub struct ExecWatchArgs {
    /// The key or directory
    #[arg(value_name = "KEY")]
    pub path: String,
    /// The command, after `--`
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    /// Watch everything under the directory
    #[arg(short = 'r', long)]
    pub recursive: bool,
}

/// etcd v2's error: code, words, the key and the index (store revision).
fn v2_error(code: u32, words: &str, key: &str, revision: i64) -> Failure {
    Failure::new(
        ExitCode::BAD_FEATURE,
        format!(" {code}: {words} ({key}) [{revision}]"),
    )
}

fn dir_prefix(dir: &str) -> String {
    let trimmed = dir.trim_end_matches('/');
    format!("{trimmed}/")
}

/// `ls`: one path per line, directories (a child with keys below it)
/// once, in key order.
pub async fn ls(ctx: &Ctx, a: LsArgs) -> Result<(), Failure> {
    let dir = a.dir.unwrap_or_else(|| "/".to_string());
    let prefix = dir_prefix(&dir);
    let mut c = ctx.connect().await?;
    let opts = GetOptions::new().with_prefix().with_keys_only();
    let resp = c
        .get(prefix.as_str(), Some(opts))
        .await
        .map_err(|e| ctx.failed(e))?;
    let mut out: Vec<String> = Vec::new();
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let rest = &key[prefix.len()..];
        if rest.is_empty() {
            continue; // the directory's own marker
        }
        let shown = if a.recursive {
            key.trim_end_matches('/').to_string()
        } else {
            match rest.find('/') {
                Some(i) => format!("{prefix}{}", &rest[..i]),
                None => key.clone(),
            }
        };
        if out.last() != Some(&shown) {
            out.push(shown);
        }
    }
    if out.is_empty() && !resp.kvs().iter().any(|kv| kv.key() == prefix.as_bytes()) && dir != "/" {
        let rev = resp.header().map_or(0, |h| h.revision());
        return Err(v2_error(100, "Key not found", &dir, rev));
    }
    for line in out {
        println!("{line}");
    }
    Ok(())
}

async fn lease_for(
    ctx: &Ctx,
    c: &mut etcd_client::Client,
    ttl: i64,
) -> Result<PutOptions, Failure> {
    if ttl <= 0 {
        return Ok(PutOptions::new());
    }
    let lease = c.lease_grant(ttl, None).await.map_err(|e| ctx.failed(e))?;
    Ok(PutOptions::new().with_lease(lease.id()))
}

/// `set`: put, printing the value.
pub async fn set(ctx: &Ctx, a: SetArgs) -> Result<(), Failure> {
    let mut c = ctx.connect().await?;
    let opts = lease_for(ctx, &mut c, a.ttl).await?;
    c.put(a.path.as_str(), a.value.as_str(), Some(opts))
        .await
        .map_err(|e| ctx.failed(e))?;
    println!("{}", a.value);
    Ok(())
}

/// `mk` (`exists: false`: only a new key) and `update` (`exists: true`:
/// only an existing one), as one transaction.
pub async fn put_if(ctx: &Ctx, a: SetArgs, exists: bool) -> Result<(), Failure> {
    let mut c = ctx.connect().await?;
    let opts = lease_for(ctx, &mut c, a.ttl).await?;
    let op = if exists {
        CompareOp::Greater
    } else {
        CompareOp::Equal
    };
    let txn = Txn::new()
        .when(vec![Compare::create_revision(a.path.as_str(), op, 0)])
        .and_then(vec![TxnOp::put(
            a.path.as_str(),
            a.value.as_str(),
            Some(opts),
        )]);
    let resp = c.txn(txn).await.map_err(|e| ctx.failed(e))?;
    if !resp.succeeded() {
        let rev = resp.header().map_or(0, |h| h.revision());
        return Err(if exists {
            v2_error(100, "Key not found", &a.path, rev)
        } else {
            v2_error(105, "Key already exists", &a.path, rev)
        });
    }
    println!("{}", a.value);
    Ok(())
}

/// (keys under `prefix`, the revision the count was read at).
async fn count_under(
    ctx: &Ctx,
    c: &mut etcd_client::Client,
    prefix: &str,
) -> Result<(i64, i64), Failure> {
    let opts = GetOptions::new().with_prefix().with_count_only();
    let resp = c.get(prefix, Some(opts)).await.map_err(|e| ctx.failed(e))?;
    Ok((resp.count(), resp.header().map_or(0, |h| h.revision())))
}

/// `mkdir`: the marker key `DIR/`, if the directory does not exist.
pub async fn mkdir(ctx: &Ctx, a: MkdirArgs) -> Result<(), Failure> {
    let marker = dir_prefix(&a.path);
    let mut c = ctx.connect().await?;
    let (count, rev) = count_under(ctx, &mut c, &marker).await?;
    if count > 0 {
        return Err(v2_error(105, "Key already exists", &a.path, rev));
    }
    c.put(marker.as_str(), "", None)
        .await
        .map_err(|e| ctx.failed(e))?;
    Ok(())
}

/// `rm`: a key; with `--dir` an empty directory; with `--recursive` a
/// directory and everything under it.
pub async fn rm(ctx: &Ctx, a: RmArgs) -> Result<(), Failure> {
    let mut c = ctx.connect().await?;
    let prefix = dir_prefix(&a.path);
    let resp = if a.recursive {
        let txn = Txn::new().and_then(vec![
            TxnOp::delete(a.path.as_str(), None),
            TxnOp::delete(prefix.as_str(), Some(DeleteOptions::new().with_prefix())),
        ]);
        let r = c.txn(txn).await.map_err(|e| ctx.failed(e))?;
        let deleted: i64 = r
            .op_responses()
            .into_iter()
            .map(|op| match op {
                etcd_client::TxnOpResponse::Delete(d) => d.deleted(),
                _ => 0,
            })
            .sum();
        (deleted, r.header().map_or(0, |h| h.revision()))
    } else {
        let key = if a.dir {
            prefix.as_str()
        } else {
            a.path.as_str()
        };
        if a.dir {
            let (count, rev) = count_under(ctx, &mut c, &prefix).await?;
            if count > 1 {
                return Err(v2_error(108, "Directory not empty", &a.path, rev));
            }
        }
        let d = c.delete(key, None).await.map_err(|e| ctx.failed(e))?;
        (d.deleted(), d.header().map_or(0, |h| h.revision()))
    };
    if resp.0 == 0 {
        return Err(v2_error(100, "Key not found", &a.path, resp.1));
    }
    Ok(())
}

/// `exec-watch`: runs the command after each change with etcd v2's
/// variables (`ETCD_WATCH_ACTION` set/delete, `ETCD_WATCH_KEY`,
/// `ETCD_WATCH_VALUE`, `ETCD_WATCH_MODIFIED_INDEX`), until stopped.
pub async fn exec_watch(ctx: &Ctx, a: ExecWatchArgs) -> Result<(), Failure> {
    let mut c = ctx.connect().await?;
    let (key, opts) = if a.recursive {
        (dir_prefix(&a.path), WatchOptions::new().with_prefix())
    } else {
        (a.path.clone(), WatchOptions::new())
    };
    let mut stream = c
        .watch(key.as_str(), Some(opts))
        .await
        .map_err(|e| ctx.failed(e))?;
    let Some((program, args)) = a.command.split_first() else {
        return Ok(());
    };
    while let Some(resp) = stream.message().await.map_err(|e| ctx.failed(e))? {
        if resp.canceled() {
            return Err(Failure::new(
                ExitCode::INTERRUPTED,
                "watch is canceled by the server",
            ));
        }
        for e in resp.events() {
            let Some(kv) = e.kv() else { continue };
            let action = match e.event_type() {
                EventType::Put => "set",
                EventType::Delete => "delete",
            };
            let status = std::process::Command::new(program)
                .args(args)
                .env("ETCD_WATCH_ACTION", action)
                .env("ETCD_WATCH_KEY", String::from_utf8_lossy(kv.key()).as_ref())
                .env(
                    "ETCD_WATCH_VALUE",
                    String::from_utf8_lossy(kv.value()).as_ref(),
                )
                .env("ETCD_WATCH_MODIFIED_INDEX", kv.mod_revision().to_string())
                .status();
            if let Err(err) = status {
                eprintln!("command {:?} error ({err})", a.command);
            }
        }
    }
    Ok(())
}
