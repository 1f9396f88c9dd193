//! `lock` and `elect`, over the `v3lock` and `v3election` services with a
//! session lease kept alive meanwhile (etcdctl's `concurrency.Session`):
//! the lock held (or the leadership kept) until SIGINT/SIGTERM, or for the
//! run of a command; `elect -l` prints each new leader.

use clap::Args;
use etcd_client::{Client, LockOptions};

use super::{Ctx, Failure};
use crate::modes::ExitCode;

/// `lock`.
#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// The lock's name, then (after `--` if it has flags) a command to run holding it
    #[arg(value_name = "LOCKNAME")]
    pub name: Option<String>,
    /// The command and its arguments
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
    /// timeout for session, seconds
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
}

/// `elect`.
#[derive(Debug, Clone, Args)]
pub struct ElectArgs {
    /// The election's name
    #[arg(value_name = "ELECTION")]
    pub name: Option<String>,
    /// The proposal to campaign with
    pub proposal: Option<String>,
    /// observation mode
    #[arg(short = 'l', long)]
    pub listen: bool,
}

/// A lease kept alive every TTL/3 until dropped (etcdctl's session).
struct Session {
    lease: i64,
    keeper: tokio::task::JoinHandle<()>,
}

impl Session {
    async fn start(ctx: &Ctx, c: &mut Client, ttl: i64) -> Result<Self, Failure> {
        let lease = c
            .lease_grant(ttl, None)
            .await
            .map_err(|e| ctx.failed(e))?
            .id();
        let (mut keeper, mut stream) =
            c.lease_keep_alive(lease).await.map_err(|e| ctx.failed(e))?;
        let every = std::time::Duration::from_secs((ttl / 3).max(1) as u64);
        let keeper = tokio::spawn(async move {
            loop {
                if keeper.keep_alive().await.is_err() {
                    return;
                }
                if !matches!(stream.message().await, Ok(Some(r)) if r.ttl() > 0) {
                    return;
                }
                tokio::time::sleep(every).await;
            }
        });
        Ok(Self { lease, keeper })
    }

    /// Stops the keep-alives and revokes the lease.
    async fn close(self, c: &mut Client) {
        self.keeper.abort();
        let _ = c.lease_revoke(self.lease).await;
    }
}

/// Waits for SIGINT or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// `lock NAME [COMMAND…]`.
pub async fn lock(ctx: &Ctx, a: LockArgs) -> Result<(), Failure> {
    let Some(name) = a.name else {
        return Err(Failure::new(
            ExitCode::BAD_ARGS,
            "lock takes a lock name argument and an optional command to execute",
        ));
    };
    let mut c = ctx.connect().await?;
    let session = Session::start(ctx, &mut c, a.ttl).await?;
    let locked = c
        .lock(
            name.as_str(),
            Some(LockOptions::new().with_lease(session.lease)),
        )
        .await
        .map_err(|e| ctx.failed(e))?;
    let key = locked.key().to_vec();
    let rev = locked.header().map_or(0, |h| h.revision());
    let result = if a.command.is_empty() {
        let resp = c.get(key.clone(), None).await.map_err(|e| ctx.failed(e))?;
        if resp.kvs().is_empty() {
            Err(Failure::new(ExitCode::ERROR, "lock lost on init"))
        } else {
            ctx.print(ctx.printer.get(&resp, ctx.hex, false))?;
            interrupted().await;
            Ok(())
        }
    } else {
        run_holding(&a.command, &String::from_utf8_lossy(&key), rev)
    };
    let _ = c.unlock(key).await;
    session.close(&mut c).await;
    result
}

/// Runs the command with `ETCD_LOCK_KEY` and `ETCD_LOCK_REV` (an
/// inherited variable of the same name wins, as etcdctl prepends them).
fn run_holding(command: &[String], key: &str, rev: i64) -> Result<(), Failure> {
    let Some((program, args)) = command.split_first() else {
        return Ok(());
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    if std::env::var_os("ETCD_LOCK_KEY").is_none() {
        cmd.env("ETCD_LOCK_KEY", key);
    }
    if std::env::var_os("ETCD_LOCK_REV").is_none() {
        cmd.env("ETCD_LOCK_REV", rev.to_string());
    }
    match cmd.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(Failure::new(
            ExitCode::ERROR,
            match status.code() {
                Some(code) => format!("exit status {code}"),
                None => "signal: killed".to_string(),
            },
        )),
        Err(e) => Err(Failure::new(ExitCode::ERROR, e.to_string())),
    }
}

/// `elect NAME PROPOSAL` (campaign) or `elect -l NAME` (observe).
pub async fn elect(ctx: &Ctx, a: ElectArgs) -> Result<(), Failure> {
    let bad = |m: &str| Failure::new(ExitCode::BAD_ARGS, m);
    let Some(name) = a.name else {
        return Err(bad(
            "elect takes one election name argument and an optional proposal argument",
        ));
    };
    match (&a.proposal, a.listen) {
        (None, false) => return Err(bad("no proposal argument but -l not set")),
        (Some(_), true) => return Err(bad("proposal given but -l is set")),
        _ => {}
    }
    let mut c = ctx.connect().await?;
    let Some(proposal) = a.proposal else {
        // Observe: print each leader as a get of its key.
        let mut stream = c.observe(name.as_str()).await.map_err(|e| ctx.failed(e))?;
        loop {
            tokio::select! {
                () = interrupted() => return Ok(()),
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        if let Some(kv) = resp.kv() {
                            let got = c.get(kv.key(), None).await.map_err(|e| ctx.failed(e))?;
                            ctx.print(ctx.printer.get(&got, ctx.hex, false))?;
                        }
                    }
                    _ => return Err(Failure::new(ExitCode::ERROR, "elect: observer lost")),
                },
            }
        }
    };
    let session = Session::start(ctx, &mut c, 60).await?;
    let won = c
        .campaign(name.as_str(), proposal.as_str(), session.lease)
        .await
        .map_err(|e| ctx.failed(e))?;
    let leader = won.leader().cloned();
    if let Some(key) = leader.as_ref().map(|l| l.key().to_vec()) {
        let got = c.get(key, None).await.map_err(|e| ctx.failed(e))?;
        ctx.print(ctx.printer.get(&got, ctx.hex, false))?;
    }
    interrupted().await;
    if let Some(l) = leader {
        let _ = c
            .resign(Some(etcd_client::ResignOptions::new().with_leader(l)))
            .await;
    }
    session.close(&mut c).await;
    Ok(())
}
