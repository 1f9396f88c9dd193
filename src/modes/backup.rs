//! `kvd backup`: online snapshots (`save FILE`, or `save --dir DIR --keep
//! N` for cron and systemd timers), `status` of a file, `restore` of a file
//! into a new member's data dir (from kvd or from etcd 3.4/3.5: migration
//! is one command), and the offline copy of a stopped member's data dir
//! (`kvd backup --data-dir DIR --backup-dir OUT`, the seeds' `etcdctl
//! backup`). Argument parsing and presentation only: the work is in
//! `core::snapshot` and `core::server::restore`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use indicatif::ProgressBar;

use crate::core::server::restore::{self, RestorePlan};
use crate::core::snapshot::save::{self, Progress, Saved};
use crate::core::snapshot::SnapshotFile;
use crate::modes::common::connection::ConnArgs;
use crate::modes::common::output::{humanize_bytes, printer, OutputFormat};
use crate::modes::common::progress;
use crate::modes::serve::options::ServeOptions;
use crate::modes::ExitCode;

/// The flags of `kvd backup`: a subcommand, or `--data-dir` and
/// `--backup-dir` for the offline copy.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<BackupCommand>,

    /// Offline copy: the data dir of a stopped member
    #[arg(long, value_name = "DIR", requires = "backup_dir")]
    pub data_dir: Option<PathBuf>,

    /// Offline copy: where the copy goes (absent or empty)
    #[arg(long, value_name = "DIR", requires = "data_dir")]
    pub backup_dir: Option<PathBuf>,
}

/// The subcommands of `kvd backup`.
#[derive(Debug, Clone, Subcommand)]
pub enum BackupCommand {
    /// Save a snapshot from the member with the highest revision
    Save(SaveArgs),
    /// Print a snapshot file's hash, revision, key count and size
    Status(StatusArgs),
    /// Restore a snapshot (kvd's or etcd 3.4/3.5's) into a new member's data dir
    Restore(RestoreArgs),
}

/// `kvd backup save`.
#[derive(Debug, Clone, Args)]
pub struct SaveArgs {
    /// How to reach the cluster.
    #[command(flatten)]
    pub conn: ConnArgs,

    /// The file to write (or use --dir)
    #[arg(
        value_name = "FILE",
        required_unless_present = "dir",
        conflicts_with = "dir"
    )]
    pub file: Option<PathBuf>,

    /// Save into this directory as kvd-snapshot-<UTC time>-rev<revision>.db
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// With --dir: keep only the newest N snapshots there (default: all)
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,

    /// Output: simple or json (json hides the progress bar)
    #[arg(short = 'w', long, value_enum, value_name = "FORMAT", default_value_t = OutputFormat::Simple)]
    pub write_out: OutputFormat,
}

/// `kvd backup status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The snapshot file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Output format: simple, json, table or fields (etcdctl's)
    #[arg(short = 'w', long, value_enum, value_name = "FORMAT", default_value_t = OutputFormat::Simple)]
    pub write_out: OutputFormat,
}

/// `kvd backup restore` (etcdutl's `snapshot restore` flags and defaults,
/// with kvd serve's: `<name>.kvd`, `kvd-cluster`, `http://127.0.0.1:2380`).
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The snapshot file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The new member's data dir (default ./<name>.kvd); must not exist or be empty
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The new member's name
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// The new cluster: name=peer-url,… (default <name>=<advertised peer URLs>)
    #[arg(long, value_name = "CLUSTER")]
    pub initial_cluster: Option<String>,

    /// The new cluster's token
    #[arg(long, value_name = "TOKEN")]
    pub initial_cluster_token: Option<String>,

    /// This member's peer URLs (default http://127.0.0.1:2380)
    #[arg(long, value_name = "URLS")]
    pub initial_advertise_peer_urls: Option<String>,

    /// Accept a file without the trailing sha256 (a copied member database)
    #[arg(long)]
    pub skip_hash_check: bool,
}

/// Runs `kvd backup`: output on stdout, errors as one `error: …` line on
/// stderr; exit 0, 1 (failed) or 2 (bad arguments).
pub async fn run(args: BackupArgs) -> ExitCode {
    let result = match (args.command, args.data_dir, args.backup_dir) {
        (Some(BackupCommand::Save(a)), _, _) => run_save(a).await,
        (Some(BackupCommand::Status(a)), _, _) => run_status(&a),
        (Some(BackupCommand::Restore(a)), _, _) => run_restore(a),
        (None, Some(src), Some(dst)) => run_offline(&src, &dst),
        _ => Err((
            ExitCode::USAGE,
            "give a subcommand (save, status, restore), or --data-dir and --backup-dir \
             for an offline copy; see kvd backup --help"
                .to_string(),
        )),
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::OK
        }
        Err((code, message)) => {
            eprintln!("error: {message}");
            code
        }
    }
}

type Outcome = Result<String, (ExitCode, String)>;

fn failed(e: impl std::fmt::Display) -> (ExitCode, String) {
    (ExitCode::ERROR, e.to_string())
}

async fn run_save(mut a: SaveArgs) -> Outcome {
    a.conn.discover().await.map_err(failed)?;
    if !matches!(a.write_out, OutputFormat::Simple | OutputFormat::Json) {
        return Err((
            ExitCode::USAGE,
            format!(
                "{} is not an output format of backup save; use simple or json",
                a.write_out.name()
            ),
        ));
    }
    if a.keep.is_some() && a.dir.is_none() {
        return Err((ExitCode::USAGE, "--keep needs --dir".to_string()));
    }
    let cfg = a.conn.client_config().map_err(|e| (ExitCode::USAGE, e))?;
    let json = a.write_out == OutputFormat::Json;
    let bar = progress::bytes(0, json);
    bar.set_message("saving");
    let mut on_progress = |p: Progress| {
        bar.set_length(p.total);
        bar.set_position(p.received);
    };
    let (saved, removed) = match (&a.file, &a.dir) {
        (Some(file), _) => (save::save(&cfg, file, &mut on_progress).await, Vec::new()),
        (None, Some(dir)) => {
            match save::save_in_dir(&cfg, dir, a.keep.unwrap_or(0), &mut on_progress).await {
                Ok((saved, removed)) => (Ok(saved), removed),
                Err(e) => (Err(e), Vec::new()),
            }
        }
        (None, None) => return Err((ExitCode::USAGE, "give FILE or --dir".to_string())),
    };
    bar.finish_and_clear();
    let saved = saved.map_err(failed)?;
    Ok(if json {
        saved_json(&saved, &removed)
    } else {
        saved_text(&saved, &removed)
    })
}

/// etcdctl's line, then what kvd knows about the file.
fn saved_text(s: &Saved, removed: &[PathBuf]) -> String {
    let mut out = format!(
        "Snapshot saved at {}\nrevision {}, {}, sha256 {}, from {}\n",
        s.path.display(),
        s.revision,
        humanize_bytes(s.bytes),
        s.sha256,
        s.endpoint
    );
    for r in removed {
        out.push_str(&format!("removed {} (--keep)\n", r.display()));
    }
    out
}

fn saved_json(s: &Saved, removed: &[PathBuf]) -> String {
    let removed: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
    let value = serde_json::json!({
        "path": s.path.display().to_string(),
        "endpoint": s.endpoint,
        "revision": s.revision,
        "bytes": s.bytes,
        "sha256": s.sha256,
        "removed": removed,
    });
    format!("{value}\n")
}

fn run_status(a: &StatusArgs) -> Outcome {
    let name = a.file.display();
    let file = SnapshotFile::open(&a.file, true)
        .map_err(|e| failed(format!("snapshot file {name}: {e}")))?;
    let status = file
        .status()
        .map_err(|e| failed(format!("snapshot file {name}: {e}")))?;
    printer(a.write_out)
        .snapshot_status(&status)
        .map_err(|e| (ExitCode::USAGE, e.to_string()))
}

fn run_restore(a: RestoreArgs) -> Outcome {
    let options = ServeOptions {
        name: a.name,
        data_dir: a.data_dir,
        initial_cluster: a.initial_cluster,
        initial_cluster_token: a.initial_cluster_token,
        initial_advertise_peer_urls: a.initial_advertise_peer_urls,
        ..ServeOptions::default()
    };
    let cfg = options
        .resolve()
        .map_err(|e| (ExitCode::USAGE, e.to_string()))?;
    let plan = RestorePlan {
        snapshot: a.file,
        data_dir: cfg.data_dir.clone(),
        name: cfg.name.clone(),
        initial_cluster: cfg.initial_cluster.clone(),
        token: cfg.initial_cluster_token.clone(),
        skip_hash_check: a.skip_hash_check,
    };
    let bar: ProgressBar = progress::counter("changes", false);
    bar.set_message("restoring");
    let restored = restore::restore(&plan, &mut |n| bar.set_position(n));
    bar.finish_and_clear();
    let r = restored.map_err(|e| match e {
        restore::RestoreError::Config(m) => (ExitCode::USAGE, m),
        other => failed(other),
    })?;
    let cluster: Vec<String> = cfg
        .initial_cluster
        .iter()
        .flat_map(|m| m.peer_urls.iter().map(move |u| format!("{}={u}", m.name)))
        .collect();
    Ok(format!(
        "Restored {} into {}: revision {}, {} keys ({} changes kept), {} leases, compacted at {}\n\
         member {:x} of new cluster {:x}; start it with:\n  \
         kvd serve --name {} --data-dir {} --initial-cluster {} --initial-cluster-token {} \
         --initial-advertise-peer-urls {}\n",
        plan.snapshot.display(),
        plan.data_dir.display(),
        r.imported.revision,
        r.imported.keys,
        r.imported.changes,
        r.imported.leases,
        r.imported.compact_revision,
        r.member_id,
        r.cluster_id,
        plan.name,
        plan.data_dir.display(),
        cluster.join(","),
        plan.token,
        cfg.initial_advertise_peer_urls.join(","),
    ))
}

fn run_offline(src: &std::path::Path, dst: &std::path::Path) -> Outcome {
    let (id, bytes) = restore::copy_offline(src, dst).map_err(failed)?;
    Ok(format!(
        "Copied data dir {} to {} ({}): member {} ({:x}) of cluster {:x}\n",
        src.display(),
        dst.display(),
        humanize_bytes(bytes),
        id.name,
        id.member_id,
        id.cluster_id
    ))
}
