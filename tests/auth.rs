//! Auth over the wire with the etcd-client crate: users, roles and auth
//! enable/disable (the crate's own auth tests' ground); an RBAC matrix
//! over every RPC for root, a reader, a writer and an anonymous client;
//! one test per etcd advisory that kvd must not reproduce; no password in
//! the data dir, the Raft log or the logs; expired tokens refreshed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::time::Duration;

use common::*;
use etcd_client::{
    AlarmAction, AlarmType, Client, Compare, CompareOp, ConnectOptions, EventType,
    LeaseTimeToLiveOptions, Permission, PutOptions, Txn, TxnOp, UserAddOptions, WatchOptions,
};

const ROOT_PW: &str = "root-Pw-71d2";
const SECRET: &str = "Zq8-never-stored-4417";

/// A client of `endpoint` as `user` (anonymous when `None`).
async fn as_user(endpoint: &str, user: Option<(&str, &str)>) -> Client {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(REQUEST_TIMEOUT);
    if let Some((name, password)) = user {
        options = options.with_user(name, password);
    }
    Client::connect([endpoint], Some(options)).await.unwrap()
}

/// Whether an error is an auth refusal (etcd's codes and words).
fn refused<T: std::fmt::Debug>(r: &Result<T, etcd_client::Error>) -> bool {
    match r {
        Err(etcd_client::Error::GRpcStatus(s)) => {
            let m = s.message();
            m.contains("permission denied")
                || m.contains("user name is empty")
                || m.contains("user name not found")
        }
        _ => false,
    }
}

/// Root, role `root`, auth enabled; then a reader (read on prefix
/// `data/`) and a writer (write only on `data/`).
async fn setup(c: &mut Client) {
    c.user_add("root", ROOT_PW, None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.role_add("reader").await.unwrap();
    c.role_grant_permission("reader", Permission::read("data/").with_prefix())
        .await
        .unwrap();
    c.role_add("writer").await.unwrap();
    c.role_grant_permission("writer", Permission::write("data/").with_prefix())
        .await
        .unwrap();
    c.user_add("reader", "reader-pw", None).await.unwrap();
    c.user_grant_role("reader", "reader").await.unwrap();
    c.user_add("writer", "writer-pw", None).await.unwrap();
    c.user_grant_role("writer", "writer").await.unwrap();
    c.put("data/k", "v", None).await.unwrap();
    c.auth_enable().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn users_roles_and_auth_behave_as_etcds() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let e = cluster.endpoint(0);
    let mut c = cluster.client(0).await;

    // Authenticate before auth is on: etcd's error.
    let err = c.auth_client().authenticate("x".into(), "y".into()).await;
    assert!(
        format!("{err:?}").contains("authentication is not enabled"),
        "{err:?}"
    );
    // Enabling needs root with the root role.
    let err = c.auth_enable().await.unwrap_err().to_string();
    assert!(err.contains("root user does not exist"), "{err}");
    c.user_add("root", ROOT_PW, None).await.unwrap();
    let err = c.auth_enable().await.unwrap_err().to_string();
    assert!(err.contains("root user does not have root role"), "{err}");
    c.user_grant_role("root", "root").await.unwrap();
    assert!(c
        .user_add("root", "x", None)
        .await
        .unwrap_err()
        .to_string()
        .contains("user name already exists"));
    c.role_add("r").await.unwrap();
    assert!(c
        .role_add("r")
        .await
        .unwrap_err()
        .to_string()
        .contains("role name already exists"));
    c.role_grant_permission("r", Permission::read_write("a").with_prefix())
        .await
        .unwrap();
    c.role_grant_permission("r", Permission::read("z"))
        .await
        .unwrap();
    let perms = c.role_get("r").await.unwrap();
    assert_eq!(perms.permissions().len(), 2);
    assert!(c
        .role_get("nope")
        .await
        .unwrap_err()
        .to_string()
        .contains("role name not found"));
    c.user_add("u", "pw1", None).await.unwrap();
    c.user_add("cert-only", "", Some(UserAddOptions::new().with_no_pwd()))
        .await
        .unwrap();
    c.user_grant_role("u", "r").await.unwrap();
    assert_eq!(c.user_get("u").await.unwrap().roles(), ["r"]);
    assert!(c
        .user_grant_role("u", "nope")
        .await
        .unwrap_err()
        .to_string()
        .contains("role name not found"));
    assert_eq!(
        c.user_list().await.unwrap().users(),
        ["cert-only", "root", "u"]
    );
    assert_eq!(c.role_list().await.unwrap().roles(), ["r"]);
    c.auth_enable().await.unwrap();

    // Anonymous requests now fail; logins work; wrong passwords do not.
    assert!(refused(&c.get("a1", None).await));
    let mut root = as_user(&e, Some(("root", ROOT_PW))).await;
    let mut u = as_user(&e, Some(("u", "pw1"))).await;
    u.put("a1", "x", None).await.unwrap();
    assert!(refused(&u.put("b1", "x", None).await));
    let bad = Client::connect(
        [e.as_str()],
        Some(ConnectOptions::new().with_user("u", "wrong")),
    )
    .await;
    assert!(bad
        .err()
        .unwrap()
        .to_string()
        .contains("authentication failed, invalid user ID or password"));
    let no_pw = Client::connect(
        [e.as_str()],
        Some(ConnectOptions::new().with_user("cert-only", "anything")),
    )
    .await;
    assert!(no_pw
        .err()
        .unwrap()
        .to_string()
        .contains("password was given for no password user"));
    // A user reads itself, not others; root reads all.
    assert_eq!(u.user_get("u").await.unwrap().roles(), ["r"]);
    assert!(refused(&u.user_get("root").await));
    assert!(refused(&u.user_list().await));
    // Root is protected while auth is on.
    assert!(root
        .user_delete("root")
        .await
        .unwrap_err()
        .to_string()
        .contains("invalid auth management"));
    assert!(root
        .user_revoke_role("root", "root")
        .await
        .unwrap_err()
        .to_string()
        .contains("invalid auth management"));
    // Revoking a permission, then a role, takes the right away.
    root.role_revoke_permission("r", "z", None).await.unwrap();
    assert!(root
        .role_revoke_permission("r", "z", None)
        .await
        .unwrap_err()
        .to_string()
        .contains("permission is not granted to the role"));
    root.user_revoke_role("u", "r").await.unwrap();
    let mut u = as_user(&e, Some(("u", "pw1"))).await;
    assert!(refused(&u.get("a1", None).await));
    // A new password: the old one stops working.
    root.user_change_password("u", "pw2").await.unwrap();
    assert!(Client::connect(
        [e.as_str()],
        Some(ConnectOptions::new().with_user("u", "pw1"))
    )
    .await
    .is_err());
    as_user(&e, Some(("u", "pw2"))).await;
    root.role_delete("r").await.unwrap();
    root.user_delete("u").await.unwrap();
    assert!(!root
        .user_list()
        .await
        .unwrap()
        .users()
        .contains(&"u".to_string()));
    // Disabling needs root; then everything is open again.
    assert!(refused(&c.auth_disable().await));
    root.auth_disable().await.unwrap();
    c.put("open", "again", None).await.unwrap();
}

/// One cell of the matrix: `allowed` says whether the identity may.
struct Cell {
    what: String,
    allowed: bool,
    refused: bool,
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_matrix_over_every_rpc() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader_index().await;
    // Talk to a follower, so that forwarded requests are covered too.
    let follower = (leader + 1) % 3;
    let e = cluster.endpoint(follower);
    let leader_id = cluster.member_id(leader).await;
    let follower_id = cluster.member_id(follower).await;
    let mut setup_client = cluster.client(follower).await;
    setup(&mut setup_client).await;
    let mut root = as_user(&e, Some(("root", ROOT_PW))).await;
    // A lease holding a key outside data/.
    let lease = root.lease_grant(600, None).await.unwrap().id();
    root.put(
        "other/leased",
        "x",
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();

    let identities: [(&str, Option<(&str, &str)>); 4] = [
        ("root", Some(("root", ROOT_PW))),
        ("reader", Some(("reader", "reader-pw"))),
        ("writer", Some(("writer", "writer-pw"))),
        ("anonymous", None),
    ];
    let mut cells: Vec<Cell> = Vec::new();
    for (name, creds) in identities {
        let mut c = as_user(&e, creds).await;
        let is = |who: &[&str]| who.contains(&name);
        let users = ["root", "reader", "writer"];
        let mut check = |what: &str, allowed: bool, refused: bool| {
            cells.push(Cell {
                what: format!("{name}: {what}"),
                allowed,
                refused,
            })
        };
        check(
            "Range data/k",
            is(&["root", "reader"]),
            refused(&c.get("data/k", None).await),
        );
        check(
            "Range other/k",
            is(&["root"]),
            refused(&c.get("other/k", None).await),
        );
        check(
            "Put data/k",
            is(&["root", "writer"]),
            refused(&c.put("data/k", "v", None).await),
        );
        check(
            "Put other/k",
            is(&["root"]),
            refused(&c.put("other/k", "v", None).await),
        );
        check(
            "Put data/k prev_kv",
            is(&["root"]),
            refused(
                &c.put("data/k", "v", Some(PutOptions::new().with_prev_key()))
                    .await,
            ),
        );
        check(
            "Put data/k on a lease holding other/leased",
            is(&["root"]),
            refused(
                &c.put("data/k", "v", Some(PutOptions::new().with_lease(lease)))
                    .await,
            ),
        );
        check(
            "DeleteRange data/x",
            is(&["root", "writer"]),
            refused(&c.delete("data/x", None).await),
        );
        let txn = Txn::new()
            .when([Compare::version("data/k", CompareOp::Greater, 0)])
            .and_then([TxnOp::put("data/t", "1", None)]);
        check(
            "Txn compare+put data/",
            is(&["root"]),
            refused(&c.txn(txn).await),
        );
        let nested = Txn::new().and_then([TxnOp::txn(
            Txn::new().and_then([TxnOp::put("other/n", "1", None)]),
        )]);
        check(
            "Txn nested put other/n",
            is(&["root"]),
            refused(&c.txn(nested).await),
        );
        check("Compact", is(&["root"]), refused(&c.compact(1, None).await));
        let granted = c.lease_grant(60, None).await;
        check("LeaseGrant", is(&users), refused(&granted));
        check(
            "LeaseTimeToLive keys",
            is(&["root"]),
            refused(
                &c.lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
                    .await,
            ),
        );
        check(
            "LeaseTimeToLive",
            is(&users),
            refused(&c.lease_time_to_live(lease, None).await),
        );
        check("LeaseLeases", is(&["root"]), refused(&c.leases().await));
        let kept = match c.lease_keep_alive(lease).await {
            Ok((mut keeper, mut stream)) => {
                let _ = keeper.keep_alive().await;
                stream.message().await.map(|_| ())
            }
            Err(e) => Err(e),
        };
        check("LeaseKeepAlive", is(&["root"]), refused(&kept));
        check("MemberList", is(&users), refused(&c.member_list().await));
        check(
            "MemberRemove (no such member)",
            is(&["root"]),
            refused(&c.member_remove(0x1234).await),
        );
        check(
            "MemberUpdate",
            is(&["root"]),
            refused(
                &c.member_update(0x1234, vec!["http://127.0.0.1:1".into()])
                    .await,
            ),
        );
        check(
            "MemberPromote",
            is(&["root"]),
            refused(&c.member_promote(follower_id).await),
        );
        check(
            "Alarm GET",
            is(&users),
            refused(&c.alarm(AlarmAction::Get, AlarmType::None, None).await),
        );
        check(
            "Alarm DEACTIVATE",
            is(&["root"]),
            refused(
                &c.alarm(AlarmAction::Deactivate, AlarmType::Nospace, None)
                    .await,
            ),
        );
        check("Status", is(&users), refused(&c.status().await));
        let raw = |r: Result<(), etcd_client::Error>| match r {
            Err(etcd_client::Error::GRpcStatus(s)) => s.message().starts_with("auth: "),
            _ => false,
        };
        check(
            "Defragment",
            is(&["root"]),
            raw(c.defragment().await.map(|_| ())),
        );
        check("Hash", is(&["root"]), raw(c.hash().await.map(|_| ())));
        check("HashKV", is(&["root"]), raw(c.hash_kv(0).await.map(|_| ())));
        let snap = match c.snapshot().await {
            Ok(mut s) => s.message().await.map(|_| ()),
            Err(e) => Err(e),
        };
        check("Snapshot", is(&["root"]), raw(snap));
        check(
            "MoveLeader",
            is(&["root"]),
            refused(&c.move_leader(leader_id).await),
        );
        check("UserList", is(&["root"]), refused(&c.user_list().await));
        check("RoleList", is(&["root"]), refused(&c.role_list().await));
        check(
            "UserAdd",
            is(&["root"]),
            refused(&c.user_add(format!("new-{name}"), "pw", None).await),
        );
        check(
            "RoleGet reader",
            is(&["root", "reader"]),
            refused(&c.role_get("reader").await),
        );
        if name != "root" {
            // (root's AuthDisable is the last step of the test)
            check("AuthDisable", false, refused(&c.auth_disable().await));
        }
        // Watches: data/ prefix needs read; from-key needs an open grant.
        for (what, options, allowed) in [
            (
                "Watch data/ prefix",
                WatchOptions::new().with_prefix(),
                is(&["root", "reader"]),
            ),
            (
                "Watch data/k from-key",
                WatchOptions::new().with_from_key(),
                is(&["root"]),
            ),
        ] {
            let key = if what.contains("prefix") {
                "data/"
            } else {
                "data/k"
            };
            let denied = match c.watch(key, Some(options)).await {
                Ok(mut stream) => match stream.message().await {
                    Ok(Some(r)) => r.canceled(),
                    Ok(None) => true,
                    Err(e) => refused::<()>(&Err(e)),
                },
                Err(e) => refused::<()>(&Err(e)),
            };
            check(what, allowed, denied);
        }
        let locked = tokio::time::timeout(
            Duration::from_secs(10),
            c.lock(format!("lock-{name}"), None),
        )
        .await
        .unwrap();
        let lock_refused = match &locked {
            Err(etcd_client::Error::GRpcStatus(s)) => {
                s.message().contains("permission denied")
                    || s.message().contains("user name is empty")
            }
            _ => false,
        };
        check("Lock", is(&["root"]), lock_refused);
        if name == "root" {
            // What root wrote goes; what the others try must not come back.
            root.delete("other/k", None).await.unwrap();
            root.delete("other/n", None).await.unwrap();
        }
    }
    // AuthDisable for root last (it would open everything).
    let mut failures = Vec::new();
    let (mut denied, mut refused_count) = (0, 0);
    for cell in &cells {
        if !cell.allowed {
            denied += 1;
            refused_count += usize::from(cell.refused);
        }
        if cell.allowed == cell.refused {
            failures.push(format!(
                "{}: expected {}, got {}",
                cell.what,
                if cell.allowed { "allowed" } else { "refused" },
                if cell.refused { "refused" } else { "allowed" }
            ));
        }
    }
    eprintln!(
        "RBAC matrix: {} attempts, {denied} must be refused, {refused_count} refused",
        cells.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing a refused request asked for was written.
    for key in ["other/k", "other/n"] {
        let got = root.get(key, None).await.unwrap();
        assert!(
            got.kvs().is_empty(),
            "{key} was written by a refused request"
        );
    }
    root.auth_disable().await.unwrap();
    cluster.assert_running();
}

#[tokio::test(flavor = "multi_thread")]
async fn advisories_are_not_reproduced() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let e = cluster.endpoint(0);
    let mut c = cluster.client(0).await;
    setup(&mut c).await;
    let mut root = as_user(&e, Some(("root", ROOT_PW))).await;
    let mut reader = as_user(&e, Some(("reader", "reader-pw"))).await;
    let mut writer = as_user(&e, Some(("writer", "writer-pw"))).await;
    let mut anon = as_user(&e, None).await;
    let lease = root.lease_grant(600, None).await.unwrap().id();
    root.put("secret/a", "s", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();

    // GHSA-rfx7-8w68-q57q: a nested txn's ops are checked.
    let nested = Txn::new().and_then([TxnOp::txn(
        Txn::new().and_then([TxnOp::put("secret/a", "pwned", None)]),
    )]);
    assert!(refused(&writer.txn(nested).await));
    let nested_read = Txn::new().and_then([TxnOp::txn(
        Txn::new().and_then([TxnOp::get("secret/a", None)]),
    )]);
    assert!(refused(&reader.txn(nested_read).await));

    // GHSA-x35m-3gp4-4fh5: prev_kv needs read, attaching a lease needs
    // write on its keys, in a txn as outside.
    let in_txn = Txn::new().and_then([TxnOp::put(
        "data/p",
        "v",
        Some(PutOptions::new().with_prev_key()),
    )]);
    assert!(refused(&writer.txn(in_txn).await));
    let attach = Txn::new().and_then([TxnOp::put(
        "data/l",
        "v",
        Some(PutOptions::new().with_lease(lease)),
    )]);
    assert!(refused(&writer.txn(attach).await));
    assert!(refused(&writer.lease_revoke(lease).await));

    // GHSA-xg4h-6gfc-h4m8: read on data/ does not open a from-key watch.
    let mut stream = reader
        .watch("data/", Some(WatchOptions::new().with_from_key()))
        .await
        .unwrap();
    let r = stream.message().await.unwrap().unwrap();
    assert!(r.canceled(), "{r:?}");
    assert!(
        r.cancel_reason().contains("PermissionDenied"),
        "{}",
        r.cancel_reason()
    );
    let mut ok = reader
        .watch("data/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(!ok.message().await.unwrap().unwrap().canceled());
    root.put("secret/b", "s", None).await.unwrap();
    root.put("data/seen", "1", None).await.unwrap();
    let event = ok.message().await.unwrap().unwrap();
    assert_eq!(event.events()[0].kv().unwrap().key(), b"data/seen");
    assert_eq!(event.events()[0].event_type(), EventType::Put);

    // GHSA-q8m4-xhhv-38mg: no anonymous member, alarm, lease or status
    // calls; no member changes, alarm changes or compaction below root.
    assert!(refused(&anon.member_list().await));
    assert!(refused(
        &anon.alarm(AlarmAction::Get, AlarmType::None, None).await
    ));
    assert!(refused(&anon.lease_grant(10, None).await));
    assert!(refused(&anon.lease_time_to_live(lease, None).await));
    assert!(refused(&anon.status().await));
    assert!(refused(
        &writer.member_add(["http://127.0.0.1:9"], None).await
    ));
    assert!(refused(
        &writer
            .alarm(AlarmAction::Deactivate, AlarmType::Nospace, None)
            .await
    ));
    assert!(refused(&writer.compact(1, None).await));

    // CVE-2023-32082: listing a lease's keys needs read on them.
    let ttl_keys = reader
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await;
    assert!(refused(&ttl_keys));
    assert!(reader.lease_time_to_live(lease, None).await.is_ok());

    // Nothing was changed by any of it.
    let a = root.get("secret/a", None).await.unwrap();
    assert_eq!(a.kvs()[0].value(), b"s");
    assert!(root.get("data/l", None).await.unwrap().kvs().is_empty());
    assert!(root.get("data/p", None).await.unwrap().kvs().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_password_reaches_disk_or_logs() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(3).await;
    let e = cluster.endpoint(0);
    let mut c = cluster.client(0).await;
    c.user_add("root", SECRET, None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.user_add("app", SECRET, None).await.unwrap();
    c.auth_enable().await.unwrap();
    let mut root = as_user(&e, Some(("root", SECRET))).await;
    root.user_change_password("app", SECRET).await.unwrap();
    as_user(&e, Some(("app", SECRET))).await;
    root.put("k", "v", None).await.unwrap();
    let _ = Client::connect(
        [e.as_str()],
        Some(ConnectOptions::new().with_user("root", "wrong")),
    )
    .await;
    // Sync everything to disk, then look at every byte.
    cluster.kill_all();
    let mut files = 0;
    let mut stack = vec![cluster.dir().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            files += 1;
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "the password is in {}",
                path.display()
            );
        }
    }
    assert!(files > 20, "looked at {files} files");
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_tokens_are_refused_and_refreshed() {
    let _serial = serial().await;
    let cluster = Cluster::start_with(
        1,
        ClusterOptions {
            extra_args: vec!["--auth-token-ttl".into(), "2".into()],
            ..ClusterOptions::default()
        },
    )
    .await;
    let e = cluster.endpoint(0);
    let mut c = cluster.client(0).await;
    c.user_add("root", ROOT_PW, None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.auth_enable().await.unwrap();
    let options = |refresh: bool| {
        ConnectOptions::new()
            .with_user("root", ROOT_PW)
            .with_auto_token_refresh(refresh)
            .with_timeout(REQUEST_TIMEOUT)
    };
    let mut plain = Client::connect([e.as_str()], Some(options(false)))
        .await
        .unwrap();
    let mut refreshing = Client::connect([e.as_str()], Some(options(true)))
        .await
        .unwrap();
    // Used within the TTL, a token lives on.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        plain.put("k", "v", None).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let expired = plain.get("k", None).await.unwrap_err();
    assert!(
        expired.to_string().contains("invalid auth token"),
        "{expired}"
    );
    assert_eq!(
        refreshing.get("k", None).await.unwrap().kvs()[0].value(),
        b"v"
    );
}

/// `kvd <args>` with no inherited ETCDCTL_/KVD_ settings.
fn kvd(args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kvd"));
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("ETCDCTL_") || k.starts_with("KVD_") {
            cmd.env_remove(&key);
        }
    }
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn member_and_backup_log_in_with_user_and_password() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let e = cluster.endpoint(0);
    let mut c = cluster.client(0).await;
    c.user_add("root", ROOT_PW, None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.auth_enable().await.unwrap();
    let endpoints = format!("--endpoints={e}");
    let user = format!("--user=root:{ROOT_PW}");

    let anonymous = kvd(&["member", "list", &endpoints]);
    assert!(!anonymous.status.success());
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("user name is empty"));
    let listed = kvd(&["member", "list", &endpoints, &user]);
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 1);

    let dir = TestDir::new();
    let file = dir.path().join("snap.db");
    let file = file.to_str().unwrap();
    let refused = kvd(&["backup", "save", file, &endpoints]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("user name is empty"),
        "{refused:?}"
    );
    let saved = kvd(&[
        "backup",
        "save",
        file,
        &endpoints,
        "--user",
        "root",
        "--password",
        ROOT_PW,
    ]);
    assert!(saved.status.success(), "{saved:?}");
    let status = kvd(&["backup", "status", file, "-w", "json"]);
    assert!(status.status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_tokens_work_and_go_stale_with_the_auth_revision() {
    let _serial = serial().await;
    let dir = TestDir::new();
    let key = rcgen::KeyPair::generate().unwrap();
    let (public, private) = (dir.path().join("pub.pem"), dir.path().join("priv.pem"));
    std::fs::write(&public, key.public_key_pem()).unwrap();
    std::fs::write(&private, key.serialize_pem()).unwrap();
    let token = format!(
        "jwt,pub-key={},priv-key={},sign-method=ES256,ttl=10m",
        public.display(),
        private.display()
    );
    let cluster = Cluster::start_with(
        3,
        ClusterOptions {
            extra_args: vec!["--auth-token".into(), token],
            ..ClusterOptions::default()
        },
    )
    .await;
    let mut c = cluster.client(0).await;
    c.user_add("root", ROOT_PW, None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.auth_enable().await.unwrap();
    // A token from one member works on another (nothing is registered).
    let mut auth = c.auth_client();
    let jwt = auth
        .authenticate("root".into(), ROOT_PW.into())
        .await
        .unwrap();
    assert_eq!(jwt.token().matches('.').count(), 2, "{}", jwt.token());
    let mut root = as_user(&cluster.endpoint(1), Some(("root", ROOT_PW))).await;
    root.put("k", "v", None).await.unwrap();
    // Any change of users or roles makes older tokens stale (etcd's rule).
    let mut other = as_user(&cluster.endpoint(2), Some(("root", ROOT_PW))).await;
    other.user_add("later", "pw", None).await.unwrap();
    let stale = root.get("k", None).await.unwrap_err().to_string();
    assert!(stale.contains("revision of auth store is old"), "{stale}");
    // Logging in again works.
    let mut again = as_user(&cluster.endpoint(1), Some(("root", ROOT_PW))).await;
    assert_eq!(again.get("k", None).await.unwrap().kvs()[0].value(), b"v");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_stream_opened_before_auth_gets_no_unchecked_watches() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let mut c = cluster.client(0).await;
    // An anonymous stream, opened while auth is off.
    let mut stream = c.watch("open", None).await.unwrap();
    assert!(stream.message().await.unwrap().unwrap().created());
    c.user_add("root", ROOT_PW, None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.auth_enable().await.unwrap();
    // The same stream asks for another watch: refused as etcd refuses it.
    stream.watch("secret", None).await.unwrap();
    let r = stream.message().await.unwrap().unwrap();
    assert!(r.canceled(), "{r:?}");
    assert!(
        r.cancel_reason().contains("user name is empty"),
        "{}",
        r.cancel_reason()
    );
    let mut root = as_user(&cluster.endpoint(0), Some(("root", ROOT_PW))).await;
    root.auth_disable().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn proclaim_cannot_attach_a_key_to_anothers_lease() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let e = cluster.endpoint(0);
    let mut c = cluster.client(0).await;
    c.user_add("root", ROOT_PW, None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.role_add("elector").await.unwrap();
    c.role_grant_permission("elector", Permission::read_write("e/").with_prefix())
        .await
        .unwrap();
    c.user_add("u", "upw", None).await.unwrap();
    c.user_grant_role("u", "elector").await.unwrap();
    c.auth_enable().await.unwrap();
    let mut root = as_user(&e, Some(("root", ROOT_PW))).await;
    let victim = root.lease_grant(600, None).await.unwrap().id();
    root.put("victim/k", "v", Some(PutOptions::new().with_lease(victim)))
        .await
        .unwrap();
    let mut u = as_user(&e, Some(("u", "upw"))).await;
    let own = u.lease_grant(600, None).await.unwrap().id();
    let won = u.campaign("e", "first", own).await.unwrap();
    let leader = won.leader().unwrap();
    let forged = etcd_client::proto::PbLeaderKey {
        name: leader.name().to_vec(),
        key: leader.key().to_vec(),
        rev: leader.rev(),
        lease: victim,
    };
    let refused = u
        .proclaim(
            "second",
            Some(etcd_client::ProclaimOptions::new().with_leader(forged.into())),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("permission denied"), "{refused}");
    // With its own lease it may.
    let own_key = etcd_client::proto::PbLeaderKey {
        name: leader.name().to_vec(),
        key: leader.key().to_vec(),
        rev: leader.rev(),
        lease: own,
    };
    u.proclaim(
        "second",
        Some(etcd_client::ProclaimOptions::new().with_leader(own_key.into())),
    )
    .await
    .unwrap();
    // The victim's lease still holds only its own key, and stays renewable.
    let ttl = root
        .lease_time_to_live(victim, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.keys(), [b"victim/k".to_vec()]);
}
