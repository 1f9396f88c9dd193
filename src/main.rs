//! The `kvd` binary: parses the command line, sets up logging and the tokio
//! runtime, and hands over to the mode in `kvd::modes`. Exit codes: 0 ok,
//! 1 error, 2 bad usage or configuration.

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use kvd::modes::backup::{self, BackupArgs};
use kvd::modes::ctl::{self, CtlArgs};
use kvd::modes::member::{self, MemberArgs};
use kvd::modes::proxy::{self, ProxyArgs};
use kvd::modes::serve::{self, ServeArgs};
use kvd::modes::ExitCode;

/// mimalloc rather than glibc's malloc: allocation was 13% of a member's
/// CPU under load (ARCHITECTURE.md, "Performance notes").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// kvd: a distributed, strongly consistent key-value store speaking the etcd v3 API.
#[derive(Debug, Parser)]
#[command(name = "kvd", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a cluster member (etcd's flags; no arguments = a single-node
    /// cluster on 127.0.0.1:2379 with data in ./default.kvd)
    Serve(Box<ServeArgs>),
    /// Cluster membership: list, add, remove, update, promote (any endpoint)
    Member(MemberArgs),
    /// etcdctl's commands, flags and output (get, put, del, txn, watch,
    /// lease, endpoint, alarm, defrag, snapshot, member, …)
    Ctl(CtlArgs),
    /// Backups: save (online, or --dir --keep for cron), status, restore
    /// (also etcd's snapshots), and offline copies (--data-dir --backup-dir)
    Backup(BackupArgs),
    /// A local proxy in front of a cluster (etcd's grpc-proxy): coalesced
    /// watches and keep-alives, a serializable-read cache kept exact by a watch
    Proxy(Box<ProxyArgs>),
}

fn main() -> std::process::ExitCode {
    // The client modes read ETCDCTL_* variables, and KVD_* ones as well.
    kvd::modes::common::connection::alias_kvd_env();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version print to stdout and exit 0; usage errors exit 2.
            if let Err(io) = e.print() {
                eprintln!("error: cannot print usage: {io}");
            }
            return ExitCode(u8::try_from(e.exit_code()).unwrap_or(ExitCode::USAGE.0)).into();
        }
    };
    let code = match cli.command {
        Command::Serve(args) => serve_main(&args),
        Command::Member(args) => client_main(member::run(args)),
        Command::Backup(args) => client_main(backup::run(args)),
        Command::Ctl(args) => client_main(ctl::run(args)),
        Command::Proxy(args) => proxy_main(&args),
    };
    code.into()
}

/// `kvd serve`: config first (so its log level can set up logging), then the
/// runtime.
fn serve_main(args: &ServeArgs) -> ExitCode {
    // Resolved first as given, so that a bad flag fails before any
    // discovery traffic.
    let (opts, cfg) = match args.merged().and_then(|o| Ok((o.clone(), o.resolve()?))) {
        Ok(both) => both,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::USAGE;
        }
    };
    init_tracing(&cfg.log_level);
    // Before any thread starts: every thread of the member inherits it.
    if opts.batch_scheduling.unwrap_or(true) {
        batch_scheduling();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::ERROR;
        }
    };
    runtime.block_on(async move {
        let cfg = if opts.discovery.is_some() || opts.discovery_srv.is_some() {
            match serve::discovery::bootstrap(opts, &cfg)
                .await
                .and_then(|o| o.resolve().map_err(|e| e.to_string()))
            {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::ERROR;
                }
            }
        } else {
            cfg
        };
        serve::run(cfg).await
    })
}

/// Puts the calling thread under `SCHED_BATCH` (Linux `sched(7)`), its
/// nice value kept; `kvd serve` calls it before starting any thread, so
/// every thread of the member (tokio workers, the Raft thread, fjall's
/// workers) inherits it. The kernel then does not preempt a running thread
/// to run one it has just woken. A member's threads hand work to each
/// other all the time (a request to the Raft thread, its answer back, a
/// peer message, a watch event); with wake-up preemption each hand-off
/// switched the waker out mid-work. Under `SCHED_BATCH` the woken thread
/// runs on an idle core, or when the running one sleeps, and finds more
/// work waiting when it does. Paired A/B, 4 rounds (ARCHITECTURE.md,
/// "Performance notes"): CPU per request 10–30% lower, throughput
/// +6% (one client) to +22%, the watch p99 no worse.
/// `--batch-scheduling=false` keeps the default policy. Best effort:
/// where the policy cannot be set, the threads keep the default one.
fn batch_scheduling() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, thread_schedule_policy,
        NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
    };
    let batch = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
    let Ok(nice) = rustix::process::getpriority_process(None) else {
        return;
    };
    // The crate sets a normal policy's nice value too, from a 0–99 scale
    // (47 is nice 0); the thread's own nice value is put back after.
    let Ok(level) = ThreadPriorityValue::try_from(47u8) else {
        return;
    };
    // An error can come after the policy is set (a nice value the thread
    // may not take): the checks below are what count.
    let _ = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Crossplatform(level),
        batch,
    );
    if rustix::process::getpriority_process(None).is_ok_and(|now| now != nice) {
        let _ = rustix::process::setpriority_process(None, nice);
    }
    if thread_schedule_policy().ok() != Some(batch) {
        tracing::debug!("cannot run the member's threads under SCHED_BATCH");
    }
}

/// `kvd proxy`: its flags merged with its `--config` file, logging, then
/// the multi-threaded runtime.
fn proxy_main(args: &ProxyArgs) -> ExitCode {
    let args = match args.merged() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::USAGE;
        }
    };
    init_tracing(&args.log_level());
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(proxy::run(args)),
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            ExitCode::ERROR
        }
    }
}

/// A client mode (`member`, `backup`) on a single-threaded runtime, no
/// logging (its output is the answer).
fn client_main(mode: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(mode),
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            ExitCode::ERROR
        }
    }
}

/// Logs to stderr at `log_level`, unless `RUST_LOG` is set (and valid), which
/// then wins. Coloured only when stderr is a terminal and `NO_COLOR` is unset.
fn init_tracing(log_level: &str) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .unwrap_or_else(|e| {
                eprintln!("warning: ignoring invalid RUST_LOG ({e}); using log level {log_level}");
                EnvFilter::new(default_directives(log_level))
            }),
        _ => EnvFilter::new(default_directives(log_level)),
    };
    if let Err(e) = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal, so log files (`make cluster`) stay plain.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .try_init()
    {
        eprintln!("warning: cannot set up logging: {e}");
    }
}

/// The `--log-level` for kvd itself; the storage engine's routine messages
/// (table flushes, ingestion) are held at `warn` unless RUST_LOG asks.
fn default_directives(log_level: &str) -> String {
    format!("{log_level},fjall=warn,lsm_tree=warn")
}
