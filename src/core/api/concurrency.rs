//! What the lock and election services share, as etcd's `clientv3/
//! concurrency` package gives its `v3lock` and `v3election` servers: a
//! client of this member itself (etcd's in-process `v3client`), sessions
//! (a lease granted for 60 s when the request names none), `wait_deletes`
//! (wait until every key of a prefix created before a revision is gone)
//! and a guard that deletes a waiter's key when its caller goes away.
//! Their generated gRPC code (from `proto/`) lives in [`pb`].

use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, SortOrder, SortTarget, WatchOptions,
};
use tonic::Status;

use crate::core::api::{forwarded, ApiContext};

/// The generated messages and server traits of etcd's lock and election
/// services (build.rs, from `proto/`).
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used
)]
pub mod pb {
    /// `v3lockpb`.
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }
    /// `v3electionpb`.
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
    }
}

/// TTL of the lease a lock or campaign without one gets, seconds (etcd's
/// `concurrency.defaultSessionTTL`). The lease is not kept alive: the
/// lock or leadership ends with it unless the holder renews it.
pub const DEFAULT_SESSION_TTL: i64 = 60;

/// How long connecting to this member's own client port may take.
const SELF_DIAL_TIMEOUT: Duration = Duration::from_secs(2);

impl ApiContext {
    /// A client of this member's own client services over an in-process
    /// connection (etcd's `v3client`), connected once; it bypasses the
    /// port's TLS, as etcd's in-process client does.
    ///
    /// # Errors
    /// Unavailable when the port does not answer.
    pub async fn self_client(&self) -> Result<Client, Status> {
        let client = self
            .self_link
            .get_or_try_init(|| async {
                // Waits may last long: no request timeout on this client.
                let options = ConnectOptions::new().with_connect_timeout(SELF_DIAL_TIMEOUT);
                let local = self.local.clone();
                let channel = tonic::transport::Endpoint::from_static("http://kvd.local")
                    .connect_timeout(SELF_DIAL_TIMEOUT)
                    .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                        let local = local.clone();
                        async move { local.connect().await.map(hyper_util::rt::TokioIo::new) }
                    }));
                Client::from_channel(etcd_client::Channel::Tonic(channel), Some(options))
                    .await
                    .map_err(|e| {
                        Status::unavailable(format!("etcdserver: cannot reach itself: {e}"))
                    })
            })
            .await?;
        Ok(client.clone())
    }
}

/// etcd's v3lock and v3election answer a plain Go error (not a gRPC
/// status) as Unknown with its message; a KV status keeps its message under
/// that code.
pub fn as_unknown(status: Status) -> Status {
    Status::unknown(status.message().to_string())
}

/// An error of the in-process client, as the lock and election services
/// answer it ([`forwarded`], then [`as_unknown`]).
pub fn unknown(e: etcd_client::Error) -> Status {
    as_unknown(forwarded(e))
}

/// The start of a lock or a campaign: a client of this member, the lease
/// (the given one, or a new one of [`DEFAULT_SESSION_TTL`] seconds),
/// `name/`, and the session's key under it.
pub struct Session {
    /// A client of this member.
    pub client: Client,
    /// The session's lease.
    pub lease: i64,
    /// `name/`.
    pub prefix: Vec<u8>,
    /// `name/<lease hex>`.
    pub key: Vec<u8>,
}

impl Session {
    /// Opens a session on `name` with `lease` (0: a new lease).
    ///
    /// # Errors
    /// Unavailable when this member cannot be reached; the grant's status,
    /// as Unknown.
    pub async fn open(ctx: &ApiContext, name: &[u8], lease: i64) -> Result<Self, Status> {
        let mut client = ctx.self_client().await?;
        let lease = session_lease(&mut client, lease)
            .await
            .map_err(as_unknown)?;
        let prefix = prefix_of(name);
        let key = session_key(&prefix, lease);
        Ok(Self {
            client,
            lease,
            prefix,
            key,
        })
    }
}

/// The lease of a session: `lease` when given, else a new one of
/// [`DEFAULT_SESSION_TTL`] seconds.
///
/// # Errors
/// The grant's status.
pub async fn session_lease(client: &mut Client, lease: i64) -> Result<i64, Status> {
    if lease != 0 {
        return Ok(lease);
    }
    Ok(client
        .lease_grant(DEFAULT_SESSION_TTL, None)
        .await
        .map_err(forwarded)?
        .id())
}

/// The key a session owns under `prefix` (`name/`): the prefix and the
/// lease id in lowercase hex, as etcd's mutex and election name it.
pub fn session_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// `name` + `/`.
pub fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// A range of the key created first under `prefix` (etcd's
/// `WithFirstCreate`).
pub fn first_created() -> GetOptions {
    GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1)
}

/// etcd's `waitDeletes`: waits until no key under `prefix` has a create
/// revision at or below `max_create_revision`, watching the newest such
/// key until it is deleted, again and again; the revision of the last
/// range that found none.
///
/// # Errors
/// The status of a failed range or watch.
pub async fn wait_deletes(
    client: &mut Client,
    prefix: &[u8],
    max_create_revision: i64,
) -> Result<i64, Status> {
    loop {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_max_create_revision(max_create_revision)
            .with_limit(1);
        let resp = client.get(prefix, Some(options)).await.map_err(forwarded)?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let Some(last) = resp.kvs().first() else {
            return Ok(revision);
        };
        wait_delete(client, last.key(), revision).await?;
    }
}

/// Waits until `key` is deleted after revision `revision`.
async fn wait_delete(client: &mut Client, key: &[u8], revision: i64) -> Result<(), Status> {
    let options = WatchOptions::new().with_start_revision(revision + 1);
    let mut stream = client.watch(key, Some(options)).await.map_err(forwarded)?;
    loop {
        match stream.message().await.map_err(forwarded)? {
            Some(resp) => {
                if resp.canceled() {
                    return Err(Status::unavailable(format!(
                        "etcdserver: watch canceled: {}",
                        resp.cancel_reason()
                    )));
                }
                if resp
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    return Ok(());
                }
            }
            None => return Err(Status::unavailable("etcdserver: watch ended")),
        }
    }
}

/// Deletes a key when dropped, unless disarmed: a lock or campaign whose
/// caller went away while it waited must not leave its key behind (etcd
/// deletes it when the wait fails).
pub struct DeleteOnDrop {
    /// The client to delete with.
    client: Client,
    /// The key; `None` once disarmed.
    key: Option<Vec<u8>>,
}

impl DeleteOnDrop {
    /// Guards `key`.
    pub fn new(client: Client, key: Vec<u8>) -> Self {
        Self {
            client,
            key: Some(key),
        }
    }

    /// Keeps the key (the wait succeeded).
    pub fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut client = self.client.clone();
            tokio::spawn(async move {
                if let Err(e) = client.delete(key, None).await {
                    tracing::warn!("cannot delete an abandoned lock or campaign key: {e}");
                }
            });
        }
    }
}
