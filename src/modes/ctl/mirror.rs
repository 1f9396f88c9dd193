//! `make-mirror`: copies a prefix of the cluster to another cluster, then
//! keeps it in step, as etcdctl 3.4 does: the keys at one revision in pages
//! of 1000 (one put each), then the watched changes of each source
//! revision as one transaction, with the prefix rewritten; the running
//! count of copied changes printed every 30 seconds; it runs until
//! stopped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Args};
use etcd_client::{EventType, GetOptions, Txn, TxnOp, WatchOptions};

use super::{Ctx, Failure};
use crate::core::client::{normalize_endpoints, ClientConfig, ClientTls};
use crate::modes::common::output::auth::prefix_end;
use crate::modes::ExitCode;

/// Keys per page of the first copy (etcd's mirror `batchLimit`).
const PAGE: i64 = 1000;
/// How often the count is printed.
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// `make-mirror`.
#[derive(Debug, Clone, Args)]
pub struct MakeMirrorArgs {
    /// The destination endpoint
    #[arg(value_name = "DESTINATION")]
    pub destination: Vec<String>,
    /// Key-value prefix to mirror
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Destination prefix to mirror a prefix to a different prefix in the destination cluster
    #[arg(long, default_value = "")]
    pub dest_prefix: String,
    /// mirror key-values to the root of the destination cluster
    #[arg(long)]
    pub no_dest_prefix: bool,
    /// Verify certificates of TLS enabled secure servers using this CA bundle (destination cluster)
    #[arg(long, value_name = "PATH")]
    pub dest_cacert: Option<std::path::PathBuf>,
    /// Identify secure client using this TLS certificate file for the destination cluster
    #[arg(long, value_name = "PATH")]
    pub dest_cert: Option<std::path::PathBuf>,
    /// Identify secure client using this TLS key file for the destination cluster
    #[arg(long, value_name = "PATH")]
    pub dest_key: Option<std::path::PathBuf>,
    /// Disable transport security for client connections (destination cluster)
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub dest_insecure_transport: bool,
}

fn bad(message: impl Into<String>) -> Failure {
    Failure::new(ExitCode::BAD_ARGS, message)
}

/// The destination's client, from its flags.
fn destination(ctx: &Ctx, a: &MakeMirrorArgs) -> Result<ClientConfig, Failure> {
    let [endpoint] = a.destination.as_slice() else {
        return Err(bad("make-mirror takes one destination argument"));
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| bad(format!("open {}: {e}", p.display())))
    };
    let tls = match (&a.dest_cert, &a.dest_key) {
        (Some(_), None) | (None, Some(_)) => {
            return Err(bad(format!(
                "KeyFile and CertFile must both be present[key: {}, cert: {}]",
                a.dest_key
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string()),
                a.dest_cert
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string()),
            )))
        }
        (cert, key) if cert.is_some() || a.dest_cacert.is_some() || !a.dest_insecure_transport => {
            let identity = match (cert, key) {
                (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                _ => None,
            };
            let ca = a.dest_cacert.as_deref().map(read).transpose()?;
            Some(ClientTls { ca, identity })
        }
        _ => None,
    };
    let endpoints = normalize_endpoints(endpoint, tls.is_some()).map_err(|e| bad(e.to_string()))?;
    let mut config = ClientConfig::new(
        endpoints,
        ctx.client.dial_timeout,
        ctx.client.request_timeout,
    );
    config.tls = tls;
    config.keep_alive = ctx.client.keep_alive;
    Ok(config)
}

/// Runs the mirror until it fails (it never ends by itself).
pub async fn make_mirror(ctx: &Ctx, a: MakeMirrorArgs) -> Result<(), Failure> {
    let dest_config = destination(ctx, &a)?;
    let mut src = ctx.connect().await?;
    let mut dest = dest_config
        .connect()
        .await
        .map_err(|e| Failure::new(ExitCode::BAD_CONNECTION, ctx.describe(e)))?;
    let total = Arc::new(AtomicU64::new(0));
    {
        let total = total.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REPORT_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                println!("{}", total.load(Ordering::Relaxed));
            }
        });
    }
    // The revision the copy is taken at.
    let base = src
        .get("foo", Some(GetOptions::new().with_count_only()))
        .await
        .map_err(|e| ctx.failed(e))?;
    let revision = base.header().map_or(0, |h| h.revision());
    if a.no_dest_prefix && !a.dest_prefix.is_empty() {
        return Err(bad(
            "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one",
        ));
    }
    let dest_prefix = if a.no_dest_prefix {
        String::new()
    } else if a.dest_prefix.is_empty() {
        a.prefix.clone()
    } else {
        a.dest_prefix.clone()
    };
    let rename = |key: &[u8]| -> Vec<u8> {
        let (from, to) = (a.prefix.as_bytes(), dest_prefix.as_bytes());
        if from.is_empty() {
            return [to, key].concat();
        }
        match key.windows(from.len()).position(|w| w == from) {
            Some(at) => [&key[..at], to, &key[at + from.len()..]].concat(),
            None => key.to_vec(),
        }
    };
    // The keys at `revision`, a page at a time.
    let (mut start, end) = if a.prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        (
            a.prefix.as_bytes().to_vec(),
            prefix_end(a.prefix.as_bytes()),
        )
    };
    loop {
        let page = src
            .get(
                start.clone(),
                Some(
                    GetOptions::new()
                        .with_range(end.clone())
                        .with_revision(revision)
                        .with_limit(PAGE),
                ),
            )
            .await
            .map_err(|e| ctx.failed(e))?;
        for kv in page.kvs() {
            dest.put(rename(kv.key()), kv.value(), None)
                .await
                .map_err(|e| ctx.failed(e))?;
            total.fetch_add(1, Ordering::Relaxed);
        }
        match page.kvs().last() {
            Some(last) if page.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => break,
        }
    }
    // Then every change after it, one transaction per source revision.
    let mut options = WatchOptions::new().with_start_revision(revision + 1);
    options = if a.prefix.is_empty() {
        options.with_range(vec![0])
    } else {
        options.with_prefix()
    };
    let watch_key = if a.prefix.is_empty() {
        vec![0]
    } else {
        a.prefix.as_bytes().to_vec()
    };
    let mut stream = src
        .watch(watch_key, Some(options))
        .await
        .map_err(|e| ctx.failed(e))?;
    while let Some(resp) = stream.message().await.map_err(|e| ctx.failed(e))? {
        if resp.compact_revision() != 0 {
            return Err(Failure::new(
                ExitCode::ERROR,
                "etcdserver: mvcc: required revision has been compacted",
            ));
        }
        let mut ops = Vec::new();
        let mut at = 0;
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            if at != 0 && kv.mod_revision() != at && !ops.is_empty() {
                dest.txn(Txn::new().and_then(std::mem::take(&mut ops)))
                    .await
                    .map_err(|e| ctx.failed(e))?;
            }
            at = kv.mod_revision();
            ops.push(match event.event_type() {
                EventType::Put => TxnOp::put(rename(kv.key()), kv.value(), None),
                EventType::Delete => TxnOp::delete(rename(kv.key()), None),
            });
            total.fetch_add(1, Ordering::Relaxed);
        }
        if !ops.is_empty() {
            dest.txn(Txn::new().and_then(ops))
                .await
                .map_err(|e| ctx.failed(e))?;
        }
    }
    Err(Failure::new(ExitCode::ERROR, "<nil>"))
}
