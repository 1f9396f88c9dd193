//! `watch`: one key or range, printed per event as etcdctl does; with
//! `-- COMMAND [ARGS…]` the command runs after each event with etcdctl's
//! `ETCD_WATCH_*` variables. A watch that the server cancels (e.g. its
//! start revision was compacted) exits with etcdctl's `ExitInterrupted`.
//! `watch -i` reads `watch …` and `progress` lines from stdin, each watch
//! running beside the others, as etcdctl's interactive mode does.

use clap::{Args, Parser};
use etcd_client::{EventType, WatchOptions};

use super::{Ctx, Failure};
use crate::modes::common::output::go_quote;
use crate::modes::ExitCode;

/// `watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// The key
    #[arg(id = "watch_key", value_name = "KEY")]
    pub key: Option<String>,
    /// The end of the range [key, range_end)
    pub range_end: Option<String>,
    /// After `--`: a command to run per event (with ETCD_WATCH_* set)
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    /// Interactive mode: read `watch [options] KEY [RANGE_END]` and `progress` lines from stdin
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Watch on a prefix if prefix is set
    #[arg(long)]
    pub prefix: bool,
    /// Revision to start watching
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// get the previous key-value pair before the event happens
    #[arg(long)]
    pub prev_kv: bool,
    /// get periodic watch progress notification from server
    #[arg(long)]
    pub progress_notify: bool,
}

/// Runs the watch until the server ends it or the process is stopped.
pub async fn watch(ctx: &Ctx, a: WatchArgs) -> Result<(), Failure> {
    if a.interactive {
        return interactive(ctx).await;
    }
    let mut c = ctx.connect().await?;
    match watch_one(ctx, &mut c, &a, None).await? {
        Some(reason) => {
            if !reason.is_empty() {
                eprintln!("watch was canceled ({reason})");
            }
            Err(Failure::new(
                ExitCode::INTERRUPTED,
                "watch is canceled by the server",
            ))
        }
        None => Err(Failure::new(
            ExitCode::INTERRUPTED,
            "watch is canceled by the server",
        )),
    }
}

/// One line of `watch -i`: etcdctl parses each with fresh flags.
#[derive(Debug, Parser)]
#[command(name = "watch", no_binary_name = false)]
struct WatchLine {
    #[command(flatten)]
    args: WatchArgs,
}

/// etcdctl's interactive watch: a line at a time from stdin until it
/// ends (etcdctl then exits with `ExitInvalidInput`).
async fn interactive(ctx: &Ctx) -> Result<(), Failure> {
    use tokio::io::AsyncBufReadExt as _;
    let c = ctx.connect().await?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let (progress, _) = tokio::sync::broadcast::channel(16);
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => {
                return Err(Failure::new(
                    ExitCode::INVALID_INPUT,
                    "Error reading watch request line: EOF",
                ))
            }
            Err(e) => {
                return Err(Failure::new(
                    ExitCode::INVALID_INPUT,
                    format!("Error reading watch request line: {e}"),
                ))
            }
        };
        let tokens =
            super::kv::argify(&line).map_err(|e| Failure::new(ExitCode::INVALID_INPUT, e))?;
        match tokens.first().map(String::as_str) {
            None => eprintln!("Invalid command: {line} (watch and progress supported)"),
            Some("progress") => {
                // Every active watch asks; each prints what it hears.
                let _ = progress.send(());
            }
            Some("watch") if tokens.len() < 2 => {
                eprintln!("Invalid command watch (command type or key is not provided)");
            }
            Some("watch") => {
                let parsed = WatchLine::try_parse_from(&tokens).map_err(|e| {
                    let text = e.to_string();
                    let first = text.lines().next().unwrap_or_default();
                    Failure::new(
                        ExitCode::BAD_ARGS,
                        first.trim_start_matches("error: ").to_string(),
                    )
                })?;
                let a = parsed.args;
                if a.key.is_none() {
                    return Err(Failure::new(ExitCode::BAD_ARGS, "bad number of arguments"));
                }
                if a.range_end.is_some() && a.prefix {
                    eprintln!("Invalid command {line} (`range_end` and `--prefix` are mutually exclusive)");
                    continue;
                }
                let (ctx, mut c) = (ctx.clone(), c.clone());
                let asked = progress.subscribe();
                tokio::spawn(async move {
                    match watch_one(&ctx, &mut c, &a, Some(asked)).await {
                        Ok(Some(reason)) => eprintln!("watch was canceled ({reason})"),
                        Ok(None) => {}
                        Err(f) => eprintln!("Error: {}", f.message),
                    }
                });
            }
            Some(_) => eprintln!("Invalid command {line} (only support watch)"),
        }
    }
}

/// Runs one watch, printing its events; `Ok(Some(reason))` when the
/// server cancels it, `Ok(None)` when the stream ends.
async fn watch_one(
    ctx: &Ctx,
    c: &mut etcd_client::Client,
    a: &WatchArgs,
    mut progress: Option<tokio::sync::broadcast::Receiver<()>>,
) -> Result<Option<String>, Failure> {
    let bad = |m: &str| Failure::new(ExitCode::BAD_ARGS, m);
    let command = a.command.clone();
    let (key, range_end) = match (a.key.clone(), a.range_end.clone()) {
        (None, _) => return Err(bad("bad number of arguments")),
        (Some(key), None) => (key, None),
        (Some(key), Some(end)) if !a.prefix => (key, Some(end)),
        _ => return Err(bad("bad number of arguments")),
    };
    let mut opts = WatchOptions::new();
    if let Some(end) = &range_end {
        opts = opts.with_range(end.clone());
    }
    if a.prefix {
        opts = opts.with_prefix();
    }
    if a.rev > 0 {
        opts = opts.with_start_revision(a.rev);
    }
    if a.prev_kv {
        opts = opts.with_prev_key();
    }
    if a.progress_notify {
        opts = opts.with_progress_notify();
    }
    let mut stream = c
        .watch(key.clone(), Some(opts))
        .await
        .map_err(|e| ctx.failed(e))?;
    loop {
        let next = match progress.as_mut() {
            Some(asked) => tokio::select! {
                m = stream.message() => m,
                _ = asked.recv() => {
                    stream.request_progress().await.map_err(|e| ctx.failed(e))?;
                    continue;
                }
            },
            None => stream.message().await,
        };
        let Some(resp) = next.map_err(|e| ctx.failed(e))? else {
            break;
        };
        if resp.canceled() {
            // etcdctl: the reason on stderr, then its error.
            let reason = if resp.compact_revision() > 0 {
                "etcdserver: mvcc: required revision has been compacted".to_string()
            } else {
                resp.cancel_reason().to_string()
            };
            return Ok(Some(reason));
        }
        if resp.events().is_empty() && !resp.created() {
            // etcdctl's IsProgressNotify: said, then printed as any response.
            println!(
                "progress notify: {}",
                resp.header().map_or(0, |h| h.revision())
            );
        }
        if resp.created() && resp.events().is_empty() {
            continue;
        }
        ctx.print(ctx.printer.watch(&resp, ctx.hex))?;
        if !command.is_empty() {
            for event in resp.events() {
                run_command(&command, event, resp.header().map_or(0, |h| h.revision()));
            }
        }
    }
    Ok(None)
}

/// Runs `command` for one event with etcdctl's variables:
/// `ETCD_WATCH_REVISION`, and `ETCD_WATCH_KEY`, `ETCD_WATCH_VALUE`,
/// `ETCD_WATCH_EVENT_TYPE` in Go's `%q` (quotes included); its output goes
/// to ours. A command that fails
/// to start is reported and the watch goes on (as etcdctl).
fn run_command(command: &[String], event: &etcd_client::Event, revision: i64) {
    let kv = event.kv();
    let kind = match event.event_type() {
        EventType::Put => "PUT",
        EventType::Delete => "DELETE",
    };
    let Some((program, args)) = command.split_first() else {
        return;
    };
    // etcdctl sets them with Go's %q: the quotes are part of the values.
    let quoted = |b: &[u8]| go_quote(&String::from_utf8_lossy(b));
    let status = std::process::Command::new(program)
        .args(args)
        .env("ETCD_WATCH_REVISION", revision.to_string())
        .env("ETCD_WATCH_KEY", quoted(kv.map_or(&[][..], |k| k.key())))
        .env(
            "ETCD_WATCH_VALUE",
            quoted(kv.map_or(&[][..], |k| k.value())),
        )
        .env("ETCD_WATCH_EVENT_TYPE", go_quote(kind))
        .status();
    if let Err(e) = status {
        eprintln!("command {command:?} error ({e})");
    }
}
