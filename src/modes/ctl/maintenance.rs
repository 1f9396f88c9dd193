//! `endpoint health|status|hashkv`, `alarm list|disarm`, `defrag`,
//! `move-leader` and `snapshot save|status|restore` (the code of `kvd
//! backup`), with etcdctl's `--cluster` (every member's client URLs).

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use etcd_client::{AlarmAction, AlarmOptions, AlarmType};

use super::{Ctx, Failure};
use crate::core::snapshot::save;
use crate::core::snapshot::SnapshotFile;
use crate::modes::common::output::OutputFormat;
use crate::modes::common::output::{EndpointHashKv, EndpointHealth, EndpointStatus};
use crate::modes::ExitCode;

/// `--cluster`: use all endpoints from the cluster member list.
#[derive(Debug, Clone, Args)]
pub struct ClusterFlag {
    /// use all endpoints from the cluster member list
    #[arg(long)]
    pub cluster: bool,
}

/// `endpoint` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum EndpointCommand {
    /// Checks the healthiness of endpoints specified in `--endpoints` flag
    Health(ClusterFlag),
    /// Prints out the status of endpoints specified in `--endpoints` flag
    Status(ClusterFlag),
    /// Prints the KV history hash for each endpoint in --endpoints
    Hashkv {
        /// use all endpoints from the cluster member list
        #[arg(long)]
        cluster: bool,
        /// the revision to hash, 0 for the latest
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
}

/// `alarm` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum AlarmCommand {
    /// Lists all alarms
    List,
    /// Disarms all alarms
    Disarm,
}

/// `defrag`.
#[derive(Debug, Clone, Args)]
pub struct DefragArgs {
    /// use all endpoints from the cluster member list
    #[arg(long)]
    pub cluster: bool,
}

/// `move-leader`.
#[derive(Debug, Clone, Args)]
pub struct MoveLeaderArgs {
    /// The member id (hex) to hand leadership to
    pub transferee: String,
}

/// `snapshot` subcommands (the code of `kvd backup`).
#[derive(Debug, Clone, Subcommand)]
pub enum SnapshotCommand {
    /// Stores an etcd node backend snapshot to a given file
    Save {
        /// The file
        file: PathBuf,
    },
    /// Gets backend snapshot status of a given file
    Status {
        /// The file
        file: PathBuf,
    },
    /// Restores a snapshot into a new member's data dir (as `kvd backup restore`)
    Restore(crate::modes::backup::RestoreArgs),
}

/// The endpoints a command runs against: `--endpoints`, or with
/// `--cluster` every member's client URLs (etcdctl's `endpointsFromCluster`).
/// Pairs of (endpoint to call, endpoint to print).
async fn endpoints(ctx: &Ctx, cluster: bool) -> Result<Vec<(String, String)>, Failure> {
    if !cluster {
        return Ok(ctx
            .client
            .endpoints
            .iter()
            .cloned()
            .zip(ctx.shown.iter().cloned())
            .collect());
    }
    let mut c = ctx.connect().await?;
    let resp = c.member_list().await.map_err(|e| ctx.failed(e))?;
    let mut out: Vec<String> = resp
        .members()
        .iter()
        .flat_map(|m| m.client_urls().iter().cloned())
        .collect();
    out.dedup();
    Ok(out.into_iter().map(|e| (e.clone(), e)).collect())
}

/// Runs one `endpoint` subcommand.
pub async fn endpoint(ctx: &Ctx, command: EndpointCommand) -> Result<(), Failure> {
    match command {
        EndpointCommand::Health(f) => {
            let mut all = Vec::new();
            for (ep, shown) in endpoints(ctx, f.cluster).await? {
                let started = Instant::now();
                let probe = async {
                    let mut c = ctx.client.for_endpoint(&ep).connect().await?;
                    // etcdctl: a linearizable get of "health"; a missing
                    // key or permission denied still proves health.
                    c.get("health", None).await.map(|_| ())
                };
                let result = tokio::time::timeout(ctx.client.request_timeout, probe).await;
                let error = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(ctx.describe(e)),
                    Err(_) => Some("context deadline exceeded".to_string()),
                };
                all.push(EndpointHealth {
                    endpoint: shown,
                    took: started.elapsed(),
                    error,
                });
            }
            let unhealthy = all.iter().any(|h| h.error.is_some());
            if ctx.printer.format() == OutputFormat::Simple {
                // etcdctl 3.4 writes these lines to stderr.
                let text = ctx.printer.endpoint_health(&all).unwrap_or_default();
                eprint!("{text}");
            } else {
                ctx.print(ctx.printer.endpoint_health(&all))?;
            }
            if unhealthy {
                return Err(Failure::new(ExitCode::ERROR, "unhealthy cluster"));
            }
            Ok(())
        }
        EndpointCommand::Status(f) => {
            let mut all = Vec::new();
            for (ep, shown) in endpoints(ctx, f.cluster).await? {
                let mut c = ctx
                    .client
                    .for_endpoint(&ep)
                    .connect()
                    .await
                    .map_err(|e| ctx.failed(e))?;
                let resp = c.status().await.map_err(|e| ctx.failed(e))?;
                all.push(EndpointStatus {
                    endpoint: shown,
                    status: resp,
                });
            }
            ctx.print(ctx.printer.endpoint_status(&all))
        }
        EndpointCommand::Hashkv { cluster, rev } => {
            let mut all = Vec::new();
            for (ep, shown) in endpoints(ctx, cluster).await? {
                let mut c = ctx
                    .client
                    .for_endpoint(&ep)
                    .connect()
                    .await
                    .map_err(|e| ctx.failed(e))?;
                let resp = c.hash_kv(rev).await.map_err(|e| ctx.failed(e))?;
                all.push(EndpointHashKv {
                    endpoint: shown,
                    hash: resp,
                });
            }
            ctx.print(ctx.printer.endpoint_hash_kv(&all))
        }
    }
}

/// Runs one `alarm` subcommand.
pub async fn alarm(ctx: &Ctx, command: AlarmCommand) -> Result<(), Failure> {
    let mut c = ctx.connect().await?;
    let resp = match command {
        AlarmCommand::List => c
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .map_err(|e| ctx.failed(e))?,
        AlarmCommand::Disarm => {
            // etcdctl: list, then deactivate each.
            let list = c
                .alarm(AlarmAction::Get, AlarmType::None, None)
                .await
                .map_err(|e| ctx.failed(e))?;
            let mut last = list;
            for a in last.alarms().to_vec() {
                let mut options = AlarmOptions::new();
                options.with_member(a.member_id());
                last = c
                    .alarm(AlarmAction::Deactivate, a.alarm(), Some(options))
                    .await
                    .map_err(|e| ctx.failed(e))?;
            }
            last
        }
    };
    ctx.print(ctx.printer.alarm(&resp))
}

/// `defrag`: each endpoint in turn, as etcdctl prints it.
pub async fn defrag(ctx: &Ctx, a: DefragArgs) -> Result<(), Failure> {
    let mut failed = false;
    for (ep, shown) in endpoints(ctx, a.cluster).await? {
        let result = async {
            let mut c = ctx.client.for_endpoint(&ep).connect().await?;
            c.defragment().await
        }
        .await;
        match result {
            Ok(_) => println!("Finished defragmenting etcd member[{shown}]"),
            Err(e) => {
                eprintln!(
                    "Failed to defragment etcd member[{shown}] ({})",
                    ctx.describe(e)
                );
                failed = true;
            }
        }
    }
    if failed {
        return Err(Failure::new(ExitCode::ERROR, "defragment failed"));
    }
    Ok(())
}

/// `move-leader`: finds the leader among the endpoints and asks it.
pub async fn move_leader(ctx: &Ctx, a: MoveLeaderArgs) -> Result<(), Failure> {
    let target = u64::from_str_radix(&a.transferee, 16)
        .map_err(|e| Failure::new(ExitCode::BAD_ARGS, format!("bad transferee ID ({e})")))?;
    let mut leader = None;
    for ep in &ctx.client.endpoints {
        let Ok(mut c) = ctx.client.for_endpoint(ep).connect().await else {
            continue;
        };
        let Ok(s) = c.status().await else {
            continue;
        };
        if s.header().is_some_and(|h| h.member_id() == s.leader()) {
            leader = Some((s.leader(), c));
            break;
        }
    }
    let Some((leader_id, mut c)) = leader else {
        return Err(Failure::new(
            ExitCode::ERROR,
            "no leader endpoint given at [".to_string() + &ctx.client.endpoints.join(" ") + "]",
        ));
    };
    let resp = c.move_leader(target).await.map_err(|e| ctx.failed(e))?;
    ctx.print(ctx.printer.move_leader(leader_id, target, &resp))
}

/// `snapshot save|status|restore`: `kvd backup`'s code with etcdctl's output.
pub async fn snapshot(ctx: &Ctx, command: SnapshotCommand) -> Result<(), Failure> {
    match command {
        SnapshotCommand::Save { file } => {
            if ctx.client.endpoints.len() != 1 {
                return Err(Failure::new(
                    ExitCode::BAD_ARGS,
                    format!(
                        "snapshot must be requested to one selected node, not multiple [{}]",
                        ctx.client.endpoints.join(" ")
                    ),
                ));
            }
            save::save(&ctx.client, &file, &mut |_| {})
                .await
                .map_err(|e| Failure::new(ExitCode::INTERRUPTED, e.to_string()))?;
            println!("Snapshot saved at {}", file.display());
            Ok(())
        }
        SnapshotCommand::Status { file } => {
            let status = SnapshotFile::open(&file, true)
                .and_then(|f| f.status())
                .map_err(|e| Failure::new(ExitCode::ERROR, e.to_string()))?;
            ctx.print(ctx.printer.snapshot_status(&status))
        }
        SnapshotCommand::Restore(args) => {
            let code = crate::modes::backup::run(crate::modes::backup::BackupArgs {
                command: Some(crate::modes::backup::BackupCommand::Restore(args)),
                data_dir: None,
                backup_dir: None,
            })
            .await;
            if code == ExitCode::OK {
                Ok(())
            } else {
                Err(Failure::new(code, "snapshot restore failed"))
            }
        }
    }
}
