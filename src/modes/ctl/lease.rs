//! `lease grant|revoke|timetolive|list|keep-alive`, ids in hex as etcdctl
//! takes and prints them.

use clap::Subcommand;
use etcd_client::LeaseTimeToLiveOptions;

use super::{Ctx, Failure};
use crate::modes::ExitCode;

/// The lease subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum LeaseCommand {
    /// Creates leases
    Grant {
        /// TTL, seconds
        ttl: Option<String>,
    },
    /// Revokes leases
    Revoke {
        /// Lease id in hex
        id: Option<String>,
    },
    /// Get lease information
    Timetolive {
        /// Lease id in hex
        id: Option<String>,
        /// Get keys attached to this lease
        #[arg(long)]
        keys: bool,
    },
    /// List all active leases
    List,
    /// Keeps leases alive (renew)
    KeepAlive {
        /// Lease id in hex
        id: Option<String>,
        /// Resets the keep-alive time to its original value and exits immediately
        #[arg(long)]
        once: bool,
    },
}

/// The lease id argument of `command` (hex), with etcdctl's errors.
fn lease_id(text: Option<String>, command: &str) -> Result<i64, Failure> {
    let Some(text) = text else {
        return Err(Failure::new(
            ExitCode::BAD_ARGS,
            format!("{command} command needs 1 argument"),
        ));
    };
    i64::from_str_radix(&text, 16).map_err(|_| {
        Failure::new(
            ExitCode::BAD_ARGS,
            format!(
                "bad lease ID arg ({}), expecting ID in Hex",
                super::go_parse_int_error(&text, 16)
            ),
        )
    })
}

/// Runs one lease subcommand.
pub async fn run(ctx: &Ctx, command: LeaseCommand) -> Result<(), Failure> {
    let p = ctx.printer;
    match command {
        LeaseCommand::Grant { ttl } => {
            let Some(text) = ttl else {
                return Err(Failure::new(
                    ExitCode::BAD_ARGS,
                    "lease grant command needs TTL argument",
                ));
            };
            let ttl: i64 = text.parse().map_err(|_| {
                Failure::new(
                    ExitCode::BAD_ARGS,
                    format!("bad TTL ({})", super::go_parse_int_error(&text, 10)),
                )
            })?;
            let mut c = ctx.connect().await?;
            let resp = c.lease_grant(ttl, None).await.map_err(|e| {
                Failure::new(
                    ExitCode::ERROR,
                    format!("failed to grant lease ({})", ctx.describe(e)),
                )
            })?;
            ctx.print(p.lease_grant(&resp))
        }
        LeaseCommand::Revoke { id } => {
            let id = lease_id(id, "lease revoke")?;
            let mut c = ctx.connect().await?;
            let resp = c.lease_revoke(id).await.map_err(|e| {
                Failure::new(
                    ExitCode::ERROR,
                    format!("failed to revoke lease ({})", ctx.describe(e)),
                )
            })?;
            ctx.print(p.lease_revoke(id, &resp))
        }
        LeaseCommand::Timetolive { id, keys } => {
            let id = lease_id(id, "lease timetolive")?;
            let mut c = ctx.connect().await?;
            let opts = keys.then(|| LeaseTimeToLiveOptions::new().with_keys());
            let resp = c
                .lease_time_to_live(id, opts)
                .await
                .map_err(|e| ctx.failed(e))?;
            ctx.print(p.lease_time_to_live(&resp, keys))
        }
        LeaseCommand::List => {
            let mut c = ctx.connect().await?;
            let resp = c.leases().await.map_err(|e| ctx.failed(e))?;
            ctx.print(p.lease_list(&resp))
        }
        LeaseCommand::KeepAlive { id, once } => {
            let id = lease_id(id, "lease keep-alive")?;
            let mut c = ctx.connect().await?;
            let (mut keeper, mut stream) =
                c.lease_keep_alive(id).await.map_err(|e| ctx.failed(e))?;
            loop {
                keeper.keep_alive().await.map_err(|e| ctx.failed(e))?;
                let Some(resp) = stream.message().await.map_err(|e| ctx.failed(e))? else {
                    break;
                };
                if resp.ttl() <= 0 {
                    // etcdctl: the lease expired or was revoked.
                    println!("lease {id:016x} expired or revoked.");
                    return Ok(());
                }
                ctx.print(p.lease_keep_alive(&resp))?;
                if once {
                    return Ok(());
                }
                let wait = std::time::Duration::from_secs((resp.ttl() / 3).max(1) as u64);
                tokio::time::sleep(wait).await;
            }
            println!("lease {id:016x} expired or revoked.");
            Ok(())
        }
    }
}
