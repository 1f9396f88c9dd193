//! `watch`: one key or range, printed per event as etcdctl does; with
//! `-- COMMAND [ARGS…]` the command runs after each event with etcdctl's
//! `ETCD_WATCH_*` variables. A watch that the server cancels (e.g. its
//! start revision was compacted) exits with etcdctl's `ExitInterrupted`.

use clap::Args;
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
    /// Interactive mode (watch commands from stdin; not supported yet)
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
    let bad = |m: &str| Failure::new(ExitCode::BAD_ARGS, m);
    if a.interactive {
        return Err(bad(
            "watch -i (interactive) is not supported by kvd ctl yet",
        ));
    }
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
    let mut c = ctx.connect().await?;
    let mut stream = c
        .watch(key.clone(), Some(opts))
        .await
        .map_err(|e| ctx.failed(e))?;
    while let Some(resp) = stream.message().await.map_err(|e| ctx.failed(e))? {
        if resp.canceled() {
            // etcdctl: the reason on stderr, then its error.
            let reason = if resp.compact_revision() > 0 {
                "etcdserver: mvcc: required revision has been compacted".to_string()
            } else {
                resp.cancel_reason().to_string()
            };
            if !reason.is_empty() {
                eprintln!("watch was canceled ({reason})");
            }
            return Err(Failure::new(
                ExitCode::INTERRUPTED,
                "watch is canceled by the server",
            ));
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
    Err(Failure::new(
        ExitCode::INTERRUPTED,
        "watch is canceled by the server",
    ))
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
