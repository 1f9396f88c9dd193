//! `kvd member list|add|remove|update|promote`: cluster membership from the
//! command line, against any endpoint, through the etcd v3 `Cluster` service
//! (the `etcd-client` crate). Argument parsing and presentation only.
//!
//! Output is byte-for-byte what `etcdctl member …` 3.4 prints for each
//! `--write-out` format (checked against etcdctl 3.4.23), with two
//! deliberate differences: `add` ends with the `KVD_*` variables and the
//! `kvd serve` flags the new member must start with (etcdctl prints
//! `ETCD_*` lines), and `-w table` is refused before anything is changed
//! for the commands etcdctl cannot print as a table (etcdctl makes the change,
//! then fails).

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use etcd_client::{Client, MemberAddOptions};

use crate::core::client::ClientConfig;
use crate::core::urls::check_peer_url;
use crate::modes::common::connection::ConnArgs;
use crate::modes::common::describe::describe;
use crate::modes::common::duration::show_duration;
use crate::modes::common::output::{printer, OutputFormat, Printer};
use crate::modes::ExitCode;

/// The flags of `kvd member`. The connection flags are global: they may
/// stand before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct MemberArgs {
    /// How to reach the cluster.
    #[command(flatten)]
    pub conn: ConnArgs,

    /// Output format: simple, json, table or fields (list only for the
    /// last two), as etcdctl prints them
    #[arg(
        short = 'w',
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        default_value_t = OutputFormat::Simple
    )]
    pub write_out: OutputFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: MemberCommand,
}

/// The subcommands of `kvd member`.
#[derive(Debug, Clone, Subcommand)]
pub enum MemberCommand {
    /// List the members of the cluster
    List,
    /// Add a member; prints the flags (and KVD_* variables) it must start with
    Add {
        /// Name the new member will be started with (--name)
        name: String,
        /// Comma-separated peer URLs of the new member
        #[arg(long, value_name = "URLS", required = true)]
        peer_urls: String,
        /// Add the member as a learner (receives the log, does not vote)
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member
    Remove {
        /// Member id in hex, as `kvd member list` prints it
        #[arg(value_parser = parse_member_id)]
        id: u64,
    },
    /// Change the peer URLs of a member
    Update {
        /// Member id in hex
        #[arg(value_parser = parse_member_id)]
        id: u64,
        /// Comma-separated new peer URLs
        #[arg(long, value_name = "URLS", required = true)]
        peer_urls: String,
    },
    /// Promote a learner to a voting member (refused until it is in sync)
    Promote {
        /// Member id in hex
        #[arg(value_parser = parse_member_id)]
        id: u64,
    },
}

/// Runs one `kvd member` command: prints its output on stdout, any error as
/// one `error: …` line on stderr, and returns the exit code
/// ([`ExitCode::OK`], [`ExitCode::ERROR`], or [`ExitCode::USAGE`] for
/// arguments that cannot work).
pub async fn run(mut args: MemberArgs) -> ExitCode {
    if let Err(message) = args.conn.discover().await {
        eprintln!("error: {message}");
        return ExitCode::ERROR;
    }
    let plan = match Plan::new(args) {
        Ok(plan) => plan,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::USAGE;
        }
    };
    let timeout = plan.client.request_timeout;
    match tokio::time::timeout(timeout, plan.execute()).await {
        Ok(Ok(())) => ExitCode::OK,
        Ok(Err(message)) => {
            eprintln!("error: {message}");
            ExitCode::ERROR
        }
        Err(_) => {
            eprintln!(
                "error: no answer within the command timeout ({})",
                show_duration(timeout)
            );
            ExitCode::ERROR
        }
    }
}

// ---------------------------------------------------------------------------
// Validated plan
// ---------------------------------------------------------------------------

/// The command with its arguments checked, ready to run.
struct Plan {
    /// Endpoints, timeouts (the command timeout bounds each request) and TLS.
    client: ClientConfig,
    /// How to print.
    printer: &'static dyn Printer,
    command: MemberCommand,
    /// Peer URLs of `add`/`update`, split and checked.
    peer_urls: Vec<String>,
}

impl Plan {
    fn new(args: MemberArgs) -> Result<Plan, String> {
        let MemberArgs {
            conn,
            write_out,
            command,
        } = args;
        let printer = printer(write_out);
        check_format(printer, &command)?;
        let client = conn.client_config()?;
        let peer_urls = match &command {
            MemberCommand::Add { peer_urls, .. } | MemberCommand::Update { peer_urls, .. } => {
                parse_peer_urls(peer_urls)?
            }
            _ => Vec::new(),
        };
        if let MemberCommand::Add { name, .. } = &command {
            if name.trim().is_empty() {
                return Err("member name must not be empty".to_string());
            }
        }
        Ok(Plan {
            client,
            printer,
            command,
            peer_urls,
        })
    }

    async fn execute(self) -> Result<(), String> {
        let mut client = self.client.connect().await.map_err(|e| self.describe(e))?;
        let p = self.printer;
        let printed = match &self.command {
            MemberCommand::List => {
                let resp = client.member_list().await.map_err(|e| self.describe(e))?;
                p.member_list(&resp)
            }
            MemberCommand::Add { name, learner, .. } => {
                let options = if *learner {
                    MemberAddOptions::new().with_is_learner()
                } else {
                    MemberAddOptions::new()
                };
                let resp = client
                    .member_add(self.peer_urls.clone(), Some(options))
                    .await
                    .map_err(|e| self.describe(e))?;
                let first = p.member_add(&resp).map_err(|e| e.to_string())?;
                if p.format() != OutputFormat::Simple {
                    print!("{first}");
                    return Ok(());
                }
                // As etcdctl: the simple output goes on with how to start
                // the new member, from a member list that shows it.
                let new_id = resp
                    .member()
                    .ok_or("the server added the member but did not say its id")?
                    .id();
                print!("{first}");
                let members = self.members_with(&mut client, new_id).await?;
                Ok(render_join(name, new_id, &members, &self.peer_urls))
            }
            MemberCommand::Remove { id } => {
                let resp = client
                    .member_remove(*id)
                    .await
                    .map_err(|e| self.describe(e))?;
                p.member_remove(*id, &resp)
            }
            MemberCommand::Update { id, .. } => {
                let resp = client
                    .member_update(*id, self.peer_urls.clone())
                    .await
                    .map_err(|e| self.describe(e))?;
                p.member_update(*id, &resp)
            }
            MemberCommand::Promote { id } => {
                let resp = client
                    .member_promote(*id)
                    .await
                    .map_err(|e| self.describe(e))?;
                p.member_promote(*id, &resp)
            }
        };
        print!("{}", printed.map_err(|e| e.to_string())?);
        Ok(())
    }

    /// The member list once it shows `new_id`. Like etcdctl: the endpoint
    /// that answers the list may not have applied the change yet, so a
    /// linearizable read (which waits for the applied index to reach the
    /// commit index) is made before asking again. Bounded by the command
    /// timeout around [`Plan::execute`].
    async fn members_with(
        &self,
        client: &mut Client,
        new_id: u64,
    ) -> Result<Vec<etcd_client::Member>, String> {
        loop {
            let resp = client.member_list().await.map_err(|e| self.describe(e))?;
            if resp.members().iter().any(|m| m.id() == new_id) {
                return Ok(resp.members().to_vec());
            }
            client.get("_", None).await.map_err(|e| self.describe(e))?;
        }
    }

    fn describe(&self, e: etcd_client::Error) -> String {
        describe(e, &self.client.endpoints)
    }
}

/// Refuses a format the command cannot print, before anything is changed
/// (etcdctl makes the change, then fails).
fn check_format(p: &dyn Printer, command: &MemberCommand) -> Result<(), String> {
    let supported = match command {
        MemberCommand::List => true,
        _ => matches!(p.format(), OutputFormat::Simple | OutputFormat::Json),
    };
    if supported {
        return Ok(());
    }
    let title = match command {
        MemberCommand::List => "member list",
        MemberCommand::Add { .. } => "member add",
        MemberCommand::Remove { .. } => "member remove",
        MemberCommand::Update { .. } => "member update",
        MemberCommand::Promote { .. } => "member promote",
    };
    Err(format!(
        "{} is not supported as output format of {title}; use simple or json",
        p.format().name()
    ))
}

// ---------------------------------------------------------------------------
// Argument parsing
// ---------------------------------------------------------------------------

/// A member id as etcdctl takes it: hexadecimal, no `0x`.
///
/// # Errors
/// etcdctl's wording for anything that is not a 64-bit hex number.
pub fn parse_member_id(text: &str) -> Result<u64, String> {
    let valid = !text.is_empty() && text.len() <= 16 && text.chars().all(|c| c.is_ascii_hexdigit());
    if !valid {
        return Err(format!(
            "bad member id {text:?}, expecting an id in hex (as `kvd member list` prints it)"
        ));
    }
    u64::from_str_radix(text, 16).map_err(|e| format!("bad member id {text:?}: {e}"))
}

/// Peer URLs of `add`/`update`, checked for form only (scheme, host,
/// explicit port, nothing else), as etcdctl does: the member that will use
/// them may have a host name this machine cannot resolve, and the cluster
/// checks them again.
fn parse_peer_urls(list: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        return Err("member peer urls not provided (--peer-urls)".to_string());
    }
    for raw in &urls {
        check_peer_url(raw).map_err(|reason| format!("invalid peer url {raw:?}: {reason}"))?;
    }
    Ok(urls)
}

// ---------------------------------------------------------------------------
// How to start an added member
// ---------------------------------------------------------------------------

/// What `member add` prints after its first line: how to start the new
/// member, as `KVD_*` variables (etcdctl's `ETCD_*` lines, same quoting)
/// and as `kvd serve` flags. The initial cluster lists every peer URL of
/// every member, the new one under `name`, in the order the server lists
/// them (as etcdctl does).
fn render_join(
    name: &str,
    new_id: u64,
    members: &[etcd_client::Member],
    peer_urls: &[String],
) -> String {
    let mut initial_cluster = Vec::new();
    for m in members {
        let member_name = if m.id() == new_id { name } else { m.name() };
        for url in m.peer_urls() {
            initial_cluster.push(format!("{member_name}={url}"));
        }
    }
    let initial_cluster = initial_cluster.join(",");
    let advertise = peer_urls.join(",");
    let mut out = String::from("\n");
    let _ = writeln!(out, "KVD_NAME={}", env_quote(name));
    let _ = writeln!(out, "KVD_INITIAL_CLUSTER={}", env_quote(&initial_cluster));
    let _ = writeln!(
        out,
        "KVD_INITIAL_ADVERTISE_PEER_URLS={}",
        env_quote(&advertise)
    );
    out.push_str("KVD_INITIAL_CLUSTER_STATE=\"existing\"\n");
    out.push('\n');
    let _ = writeln!(
        out,
        "kvd serve --name {} --initial-cluster {} --initial-advertise-peer-urls {} --initial-cluster-state existing",
        shell_quote(name),
        shell_quote(&initial_cluster),
        shell_quote(&advertise)
    );
    out
}

/// A value in double quotes, as Go's `%q` writes ordinary text, with the
/// characters the shell expands inside double quotes escaped too.
fn env_quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' | '\\' | '$' | '`' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A shell word: as is when it has only safe characters, else in single
/// quotes.
fn shell_quote(text: &str) -> String {
    let safe = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c));
    if safe {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_hex_without_prefix() {
        assert_eq!(
            parse_member_id("31cf1f08273efda0"),
            Ok(0x31cf_1f08_273e_fda0)
        );
        assert_eq!(parse_member_id("A"), Ok(10));
        assert!(parse_member_id("0x1").is_err());
        assert!(parse_member_id("zz").is_err());
        assert!(parse_member_id("").is_err());
        assert!(parse_member_id("+1").is_err());
        assert!(parse_member_id("11112222333344445").is_err());
    }

    #[test]
    fn peer_urls_are_checked_for_form_only() {
        assert!(parse_peer_urls("http://127.0.0.1:2380,https://node4.example:2380").is_ok());
        assert!(parse_peer_urls("quic://[::1]:2380").is_ok());
        for bad in [
            "",
            "node4:2380",
            "http://node4",
            "http://node4:",
            "http://[::1]",
            "ftp://node4:2380",
            "http://node4:2380/path",
            "http://user@node4:2380",
        ] {
            assert!(parse_peer_urls(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(
            shell_quote("n1=http://127.0.0.1:2380,n2=http://10.0.0.2:2380"),
            "n1=http://127.0.0.1:2380,n2=http://10.0.0.2:2380"
        );
        assert_eq!(shell_quote("http://[::1]:2380"), "'http://[::1]:2380'");
        assert_eq!(shell_quote("my node"), "'my node'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(env_quote("a\"$b"), "\"a\\\"\\$b\"");
    }
}
