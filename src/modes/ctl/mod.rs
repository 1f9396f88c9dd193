//! `kvd ctl`: etcdctl v3's commands, flags, output and exit codes, so that
//! scripts written for etcdctl run with `kvd ctl` in its place, against kvd
//! or against etcd. Argument parsing and presentation only: requests go
//! through the etcd-client crate (`core::client`), answers through the
//! printers of `modes::common::output`.
//!
//! - `kv`: get, put, del, txn, compaction;
//! - `watch`: watch (with `-- COMMAND` and `ETCD_WATCH_*`);
//! - `lease`: lease grant|revoke|timetolive|list|keep-alive;
//! - `maintenance`: endpoint health|status|hashkv, alarm, defrag,
//!   move-leader, snapshot (the code of `kvd backup`), version;
//! - `mirror`: make-mirror;
//! - `check`: check perf|datascale;
//! - `concurrency`: lock and elect;
//! - `auth`: user, role, auth enable|disable;
//! - `v2`: the v2-era ls, set, mk, mkdir, rm, update, exec-watch;
//! - `completion`: shell completion scripts from clap;
//! - `member` is the code of `kvd member`.
//!
//! Errors print as etcdctl prints them (`Error: <message>` on stderr) and
//! exit with etcdctl's codes (`modes::ExitCode`).

use clap::{Args, CommandFactory as _, Subcommand};

use crate::core::client::ClientConfig;
use crate::modes::common::connection::ConnArgs;
use crate::modes::common::describe::describe;
use crate::modes::common::duration::parse_duration;
use crate::modes::common::output::{printer, OutputFormat, Printer};
use crate::modes::ExitCode;

mod auth;
mod check;
mod concurrency;

mod kv;
mod lease;
mod maintenance;
mod mirror;
mod v2;
mod watch;

/// etcdctl's global flags (ETCDCTL_* variables, or KVD_*).
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// How to reach the cluster.
    #[command(flatten)]
    pub conn: ConnArgs,

    /// Keep-alive time for client connections (Go duration)
    #[arg(long, global = true, value_name = "DURATION", env = "ETCDCTL_KEEPALIVE_TIME", default_value = "2s", value_parser = parse_duration)]
    pub keepalive_time: std::time::Duration,

    /// Keep-alive timeout for client connections (Go duration)
    #[arg(long, global = true, value_name = "DURATION", env = "ETCDCTL_KEEPALIVE_TIMEOUT", default_value = "6s", value_parser = parse_duration)]
    pub keepalive_timeout: std::time::Duration,

    /// Plain-text connections when no TLS flag is given (etcdctl's default)
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_TRANSPORT", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub insecure_transport: bool,

    /// Skip verifying the server's certificate (testing only)
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY")]
    pub insecure_skip_tls_verify: bool,

    /// Output format: simple, json, table, fields (protobuf: not supported)
    #[arg(short = 'w', long, global = true, value_enum, value_name = "FORMAT", env = "ETCDCTL_WRITE_OUT", default_value_t = OutputFormat::Simple)]
    pub write_out: OutputFormat,

    /// Print keys and values as hex (\x-prefixed bytes)
    #[arg(long, global = true, env = "ETCDCTL_HEX")]
    pub hex: bool,
}

/// The flags of `kvd ctl`.
#[derive(Debug, Clone, Args)]
pub struct CtlArgs {
    /// Global flags.
    #[command(flatten)]
    pub global: GlobalArgs,

    /// The command.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// etcdctl's commands.
#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// Gets the key or a range of keys
    Get(kv::GetArgs),
    /// Puts the given key into the store
    Put(kv::PutArgs),
    /// Removes the specified key or range of keys [key, range_end)
    Del(kv::DelArgs),
    /// Txn processes all the requests in one transaction (from stdin)
    Txn(kv::TxnArgs),
    /// Compacts the event history in etcd
    Compaction(kv::CompactionArgs),
    /// Watches events stream on keys or prefixes
    Watch(watch::WatchArgs),
    /// Lease related commands
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// Endpoint related commands
    #[command(subcommand)]
    Endpoint(maintenance::EndpointCommand),
    /// Alarm related commands
    #[command(subcommand)]
    Alarm(maintenance::AlarmCommand),
    /// Defragments the storage of the etcd members with given endpoints
    Defrag(maintenance::DefragArgs),
    /// Transfers leadership to another etcd cluster member
    MoveLeader(maintenance::MoveLeaderArgs),
    /// Makes a mirror at the destination etcd cluster
    MakeMirror(mirror::MakeMirrorArgs),
    /// commands for checking properties of the etcd cluster
    #[command(subcommand)]
    Check(check::CheckCommand),
    /// Manages etcd node snapshots
    #[command(subcommand)]
    Snapshot(maintenance::SnapshotCommand),
    /// Membership related commands
    #[command(subcommand)]
    Member(crate::modes::member::MemberCommand),
    /// User related commands
    #[command(subcommand)]
    User(auth::UserCommand),
    /// Role related commands
    #[command(subcommand)]
    Role(auth::RoleCommand),
    /// Enable or disable authentication
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Acquires a named lock
    Lock(concurrency::LockArgs),
    /// Observes and participates in leader election
    Elect(concurrency::ElectArgs),
    /// (v2 era) List a directory's keys and subdirectories
    Ls(v2::LsArgs),
    /// (v2 era) Set a key's value
    Set(v2::SetArgs),
    /// (v2 era) Make a new key (fails when it exists)
    Mk(v2::SetArgs),
    /// (v2 era) Make a directory
    Mkdir(v2::MkdirArgs),
    /// (v2 era) Remove a key or a directory
    Rm(v2::RmArgs),
    /// (v2 era) Update an existing key
    Update(v2::SetArgs),
    /// (v2 era) Run a command after each change of a key or directory
    ExecWatch(v2::ExecWatchArgs),
    /// Prints a shell completion script (bash, zsh, fish, elvish, powershell)
    Completion {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Prints the version of kvd ctl
    Version,
}

/// The `kvd` command line as far as completion needs it: `kvd ctl …`.
#[derive(clap::Parser)]
#[command(name = "kvd")]
struct CompletionCli {
    #[command(subcommand)]
    command: CompletionTop,
}

#[derive(clap::Subcommand)]
enum CompletionTop {
    /// etcdctl's commands
    Ctl(CtlArgs),
}

/// A command's failure: etcdctl's exit code and message.
pub struct Failure {
    /// The exit code.
    pub code: ExitCode,
    /// The message (printed as `Error: <message>`).
    pub message: String,
}

impl Failure {
    fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// What each command gets: the client settings, the printer, and flags.
#[derive(Clone)]
pub struct Ctx {
    /// Endpoints, timeouts, TLS, keep-alive, user.
    pub client: ClientConfig,
    /// The output format's printer.
    pub printer: &'static dyn Printer,
    /// `--hex`.
    pub hex: bool,
    /// The endpoints as given (etcdctl prints them so), in the order of
    /// `client.endpoints`.
    pub shown: Vec<String>,
}

impl Ctx {
    /// A connected client (etcdctl's `mustClientFromCmd`: a failure exits
    /// with `ExitBadConnection`).
    async fn connect(&self) -> Result<etcd_client::Client, Failure> {
        self.client
            .connect()
            .await
            .map_err(|e| Failure::new(ExitCode::BAD_CONNECTION, self.describe(e)))
    }

    /// A failed request: etcdctl's `ExitError` with the server's words.
    fn failed(&self, e: etcd_client::Error) -> Failure {
        Failure::new(ExitCode::ERROR, self.describe(e))
    }

    fn describe(&self, e: etcd_client::Error) -> String {
        describe(e, &self.client.endpoints)
    }

    /// Prints a printer's output, or fails as etcdctl does for a format
    /// the command cannot print.
    fn print(&self, printed: crate::modes::common::output::Printed) -> Result<(), Failure> {
        // etcdctl's `printerUnsupported` words.
        let text = printed.map_err(|e| {
            Failure::new(
                ExitCode::BAD_FEATURE,
                format!("{} not supported as output format", e.format),
            )
        })?;
        print!("{text}");
        Ok(())
    }
}

/// Runs one `kvd ctl` command: its output on stdout, an error as
/// `Error: <message>` on stderr, and etcdctl's exit code.
pub async fn run(args: CtlArgs) -> ExitCode {
    let ctx = match context(&args.global).await {
        Ok(ctx) => ctx,
        Err(f) => return fail(f),
    };
    let result = match args.command {
        CtlCommand::Get(a) => kv::get(&ctx, a).await,
        CtlCommand::Put(a) => kv::put(&ctx, a).await,
        CtlCommand::Del(a) => kv::del(&ctx, a).await,
        CtlCommand::Txn(a) => kv::txn(&ctx, a).await,
        CtlCommand::Compaction(a) => kv::compaction(&ctx, a).await,
        CtlCommand::Watch(a) => watch::watch(&ctx, a).await,
        CtlCommand::Lease(c) => lease::run(&ctx, c).await,
        CtlCommand::Endpoint(c) => maintenance::endpoint(&ctx, c).await,
        CtlCommand::Alarm(c) => maintenance::alarm(&ctx, c).await,
        CtlCommand::Defrag(a) => maintenance::defrag(&ctx, a).await,
        CtlCommand::MoveLeader(a) => maintenance::move_leader(&ctx, a).await,
        CtlCommand::MakeMirror(a) => mirror::make_mirror(&ctx, a).await,
        CtlCommand::Check(c) => check::run(&ctx, c).await,
        CtlCommand::Snapshot(c) => maintenance::snapshot(&ctx, c).await,
        CtlCommand::Member(c) => {
            let member = crate::modes::member::MemberArgs {
                conn: args.global.conn.clone(),
                write_out: args.global.write_out,
                command: c,
            };
            return crate::modes::member::run(member).await;
        }
        CtlCommand::Ls(a) => v2::ls(&ctx, a).await,
        CtlCommand::Set(a) => v2::set(&ctx, a).await,
        CtlCommand::Mk(a) => v2::put_if(&ctx, a, false).await,
        CtlCommand::Mkdir(a) => v2::mkdir(&ctx, a).await,
        CtlCommand::Rm(a) => v2::rm(&ctx, a).await,
        CtlCommand::Update(a) => v2::put_if(&ctx, a, true).await,
        CtlCommand::ExecWatch(a) => v2::exec_watch(&ctx, a).await,
        CtlCommand::User(c) => auth::user(&ctx, c).await,
        CtlCommand::Role(c) => auth::role(&ctx, c).await,
        CtlCommand::Auth(c) => auth::auth(&ctx, c).await,
        CtlCommand::Lock(a) => concurrency::lock(&ctx, a).await,
        CtlCommand::Elect(a) => concurrency::elect(&ctx, a).await,
        CtlCommand::Completion { shell } => {
            let mut cmd = CompletionCli::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "kvd", &mut script);
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            Ok(())
        }
        CtlCommand::Version => {
            println!("etcdctl version: {}", crate::core::api::ETCD_VERSION);
            println!("API version: 3.4");
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::OK,
        Err(f) => fail(f),
    }
}

/// Go's `strconv.ParseInt` error for `text` in base `radix` (10 or 16),
/// as etcdctl's messages quote it.
pub fn go_parse_int_error(text: &str, radix: u32) -> String {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let all_digits = digits.chars().all(|c| c.is_digit(radix));
    let why = if !digits.is_empty() && all_digits {
        "value out of range"
    } else {
        "invalid syntax"
    };
    format!(
        "strconv.ParseInt: parsing {}: {why}",
        crate::modes::common::output::go_quote(text)
    )
}

fn fail(f: Failure) -> ExitCode {
    // An empty message: the command said what failed on stdout (check).
    if !f.message.is_empty() {
        eprintln!("Error: {}", f.message);
    }
    f.code
}

/// The client and printer the global flags describe.
async fn context(g: &GlobalArgs) -> Result<Ctx, Failure> {
    let bad_args = |m: String| Failure::new(ExitCode::BAD_ARGS, m);
    let mut g = g.clone();
    g.conn
        .discover()
        .await
        .map_err(|e| Failure::new(ExitCode::ERROR, e))?;
    let g = &g;
    if g.insecure_skip_tls_verify {
        return Err(bad_args(
            "--insecure-skip-tls-verify is not supported by kvd ctl; give --cacert".to_string(),
        ));
    }
    let mut client = g.conn.client_config().map_err(bad_args)?;
    client.keep_alive = Some((g.keepalive_time, g.keepalive_timeout));
    let shown = g
        .conn
        .endpoints
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    Ok(Ctx {
        client,
        printer: printer(g.write_out),
        hex: g.hex,
        shown,
    })
}
