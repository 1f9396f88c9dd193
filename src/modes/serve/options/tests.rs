//! Unit tests of option merging and validation (etcd's checks and wording).

use std::net::SocketAddr;

use super::*;
use crate::core::config::InitialMember;

fn opts() -> ServeOptions {
    ServeOptions::default()
}

fn err(o: ServeOptions) -> String {
    o.resolve().unwrap_err().to_string()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn no_arguments_give_etcds_single_node_defaults() {
    let cfg = opts().resolve().unwrap();
    assert_eq!(cfg.name, "default");
    assert_eq!(cfg.data_dir, PathBuf::from("./default.kvd"));
    assert_eq!(cfg.listen_client_addrs, vec![addr("127.0.0.1:2379")]);
    assert_eq!(cfg.advertise_client_urls, vec!["http://127.0.0.1:2379"]);
    assert_eq!(cfg.listen_peer_addrs, vec![addr("127.0.0.1:2380")]);
    assert_eq!(
        cfg.initial_advertise_peer_urls,
        vec!["http://127.0.0.1:2380"]
    );
    assert_eq!(
        cfg.initial_cluster,
        vec![InitialMember {
            name: "default".into(),
            peer_urls: vec!["http://127.0.0.1:2380".into()],
        }]
    );
    assert_eq!(cfg.initial_cluster_state, ClusterState::New);
    assert_eq!(cfg.initial_cluster_token, "kvd-cluster");
    assert_eq!(cfg.heartbeat_interval, Duration::from_millis(100));
    assert_eq!(cfg.election_timeout, Duration::from_millis(1000));
    assert_eq!(cfg.snapshot_count, 10_000);
    assert_eq!(cfg.quota_backend_bytes, 0);
    assert_eq!(cfg.max_request_bytes, 1_572_864);
    assert_eq!(cfg.max_txn_ops, 128);
    assert_eq!(cfg.log_level, "info");
}

#[test]
fn derived_defaults_follow_name_and_urls() {
    let cfg = ServeOptions {
        name: Some("infra1".into()),
        listen_client_urls: Some("http://0.0.0.0:12379".into()),
        listen_peer_urls: Some("quic://127.0.0.1:12380, http://[::1]:12381".into()),
        ..opts()
    }
    .resolve()
    .unwrap();
    assert_eq!(cfg.data_dir, PathBuf::from("./infra1.kvd"));
    assert_eq!(cfg.advertise_client_urls, vec!["http://0.0.0.0:12379"]);
    assert_eq!(
        cfg.listen_peer_addrs,
        vec![addr("127.0.0.1:12380"), addr("[::1]:12381")]
    );
    assert_eq!(
        cfg.initial_cluster[0].peer_urls,
        vec!["quic://127.0.0.1:12380", "http://[::1]:12381"]
    );
}

#[test]
fn three_member_cluster_parses_in_order() {
    let cfg = ServeOptions {
        name: Some("infra2".into()),
        listen_peer_urls: Some("http://127.0.0.1:22380".into()),
        initial_cluster: Some(
            "infra1=http://127.0.0.1:2380,infra2=http://127.0.0.1:22380,infra3=http://127.0.0.1:32380"
                .into(),
        ),
        initial_cluster_state: Some("existing".into()),
        ..opts()
    }
    .resolve()
    .unwrap();
    let names: Vec<_> = cfg
        .initial_cluster
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["infra1", "infra2", "infra3"]);
    assert_eq!(cfg.initial_cluster_state, ClusterState::Existing);
}

#[test]
fn localhost_resolves_to_loopback() {
    let cfg = ServeOptions {
        listen_client_urls: Some("http://localhost:2379".into()),
        listen_peer_urls: Some("http://localhost:2380".into()),
        // Same endpoint as the advertised localhost URL once resolved.
        initial_cluster: Some("default=http://127.0.0.1:2380".into()),
        ..opts()
    }
    .resolve()
    .unwrap();
    assert_eq!(cfg.listen_client_addrs, vec![addr("127.0.0.1:2379")]);
    assert_eq!(cfg.listen_peer_addrs, vec![addr("127.0.0.1:2380")]);
    assert_eq!(
        crate::core::urls::parse_url("quic://localhost:7", &PEER_URL_SCHEMES)
            .unwrap()
            .addr,
        addr("127.0.0.1:7")
    );
}

#[test]
fn explicit_default_port_is_accepted() {
    let cfg = ServeOptions {
        listen_client_urls: Some("http://127.0.0.1:80,https://127.0.0.1:443".into()),
        client_transport_security: Some(TransportSecurity {
            auto_tls: Some(true),
            ..TransportSecurity::default()
        }),
        ..opts()
    }
    .resolve()
    .unwrap();
    assert_eq!(
        cfg.listen_client_addrs,
        vec![addr("127.0.0.1:80"), addr("127.0.0.1:443")]
    );
    assert_eq!(cfg.client_tls_addrs, vec![addr("127.0.0.1:443")]);
}

#[test]
fn tls_settings_are_checked_as_etcd_checks_them() {
    let refused = |o: ServeOptions| o.resolve().unwrap_err().to_string();
    let https = ServeOptions {
        listen_client_urls: Some("https://127.0.0.1:2379".into()),
        ..opts()
    };
    assert_eq!(
        refused(https.clone()),
        "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379 with HTTPS scheme"
    );
    let peer = |cn: Option<&str>, host: Option<&str>| ServeOptions {
        peer_transport_security: Some(TransportSecurity {
            trusted_ca_file: Some("ca.pem".into()),
            allowed_cn: cn.map(str::to_string),
            allowed_hostname: host.map(str::to_string),
            ..TransportSecurity::default()
        }),
        ..opts()
    };
    assert!(refused(peer(Some("a"), Some("b"))).contains("mutually exclusive"));
    assert_eq!(
        peer(Some("a"), None)
            .resolve()
            .unwrap()
            .peer_tls
            .allowed_cn
            .as_deref(),
        Some("a")
    );
    let version = ServeOptions {
        tls_min_version: Some("TLS1.1".into()),
        ..opts()
    };
    assert!(refused(version).contains("unexpected TLS version \"TLS1.1\""));
    let half = ServeOptions {
        client_transport_security: Some(TransportSecurity {
            cert_file: Some("c.pem".into()),
            ..TransportSecurity::default()
        }),
        ..opts()
    };
    assert!(refused(half).contains("--cert-file and --key-file"));
    let yaml = ServeOptions::from_yaml(
        "client-transport-security:\n  cert-file: c.pem\n  key-file: k.pem\n  client-cert-auth: true\n  trusted-ca-file: ca.pem\ncipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\nauth-token-ttl: 60\n",
        Path::new("x.yaml"),
    )
    .unwrap()
    .or(opts())
    .resolve()
    .unwrap();
    assert!(yaml.client_tls.client_cert_auth);
    assert_eq!(yaml.tls_policy.cipher_suites.len(), 1);
    assert_eq!(yaml.auth.token_ttl, Duration::from_secs(60));
}

#[test]
fn bad_urls_are_rejected_with_the_reason() {
    let cases = [
        ("not a url", "missing scheme (expected scheme://host:port)"),
        (
            "ftp://127.0.0.1:2379",
            "scheme \"ftp\" is not supported (use http, https)",
        ),
        ("quic://127.0.0.1:2379", "scheme \"quic\" is not supported"),
        ("http://127.0.0.1", "missing port"),
        ("http://127.0.0.1:", "missing port"),
        (
            "http://no-such-host.invalid:2379",
            "host \"no-such-host.invalid\" does not resolve",
        ),
        ("http://127.0.0.1:2379/v3", "must not contain a path"),
        ("http://127.0.0.1:99999", "invalid port number"),
    ];
    for (url, reason) in cases {
        let e = err(ServeOptions {
            listen_client_urls: Some(url.into()),
            ..opts()
        });
        assert!(
            e.starts_with(&format!("invalid url {url:?} in --listen-client-urls: ")),
            "{url}: {e}"
        );
        assert!(e.contains(reason), "{url}: {e}");
    }
    let e = err(ServeOptions {
        listen_peer_urls: Some("unix://127.0.0.1:2380".into()),
        ..opts()
    });
    assert!(e.contains("(use http, https, quic)"), "{e}");
    let e = err(ServeOptions {
        listen_client_urls: Some(" ".into()),
        ..opts()
    });
    assert_eq!(e, "--listen-client-urls must not be empty");
}

#[test]
fn own_name_must_be_in_initial_cluster() {
    let e = err(ServeOptions {
        name: Some("infra9".into()),
        initial_cluster: Some("infra1=http://127.0.0.1:2380".into()),
        ..opts()
    });
    assert_eq!(
        e,
        "couldn't find local name \"infra9\" in the initial cluster configuration"
    );
}

#[test]
fn advertised_peer_urls_must_match_own_entry() {
    let e = err(ServeOptions {
        name: Some("infra1".into()),
        initial_advertise_peer_urls: Some("http://127.0.0.1:12380".into()),
        initial_cluster: Some("infra1=http://127.0.0.1:2380".into()),
        ..opts()
    });
    assert_eq!(
        e,
        "--initial-cluster has infra1=http://127.0.0.1:2380 but missing from \
         --initial-advertise-peer-urls=http://127.0.0.1:12380"
    );
    let e = err(ServeOptions {
        name: Some("infra1".into()),
        initial_advertise_peer_urls: Some("http://127.0.0.1:2380,http://127.0.0.1:2381".into()),
        initial_cluster: Some("infra1=http://127.0.0.1:2380".into()),
        ..opts()
    });
    assert_eq!(
        e,
        "--initial-advertise-peer-urls has http://127.0.0.1:2381 but missing from \
         --initial-cluster=infra1=http://127.0.0.1:2380"
    );
    // Joining an existing cluster skips the check, as etcd does.
    ServeOptions {
        name: Some("infra1".into()),
        initial_advertise_peer_urls: Some("http://127.0.0.1:12380".into()),
        initial_cluster: Some("infra1=http://127.0.0.1:2380".into()),
        initial_cluster_state: Some("existing".into()),
        ..opts()
    }
    .resolve()
    .unwrap();
}

#[test]
fn malformed_initial_cluster_is_rejected() {
    let e = err(ServeOptions {
        initial_cluster: Some("default".into()),
        ..opts()
    });
    assert_eq!(
        e,
        "invalid --initial-cluster entry \"default\": expected name=peer-url"
    );
    let e = err(ServeOptions {
        initial_cluster: Some("default=http://127.0.0.1:2380,b=http://localhost:2380".into()),
        ..opts()
    });
    assert!(e.contains("has duplicate url http://localhost:2380"), "{e}");
    let e = err(ServeOptions {
        initial_cluster: Some("default=127.0.0.1:2380".into()),
        ..opts()
    });
    assert!(
        e.starts_with("invalid url \"127.0.0.1:2380\" in --initial-cluster: "),
        "{e}"
    );
}

#[test]
fn initial_cluster_state_must_be_new_or_existing() {
    let e = err(ServeOptions {
        initial_cluster_state: Some("old".into()),
        ..opts()
    });
    assert_eq!(
        e,
        "invalid value \"old\" for --initial-cluster-state: valid values are \"new\" and \"existing\""
    );
}

#[test]
fn election_timeout_must_be_five_heartbeats() {
    let e = err(ServeOptions {
        heartbeat_interval: Some(300),
        election_timeout: Some(1000),
        ..opts()
    });
    assert_eq!(
        e,
        "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]"
    );
    let cfg = ServeOptions {
        heartbeat_interval: Some(200),
        election_timeout: Some(1000),
        ..opts()
    }
    .resolve()
    .unwrap();
    assert_eq!(cfg.heartbeat_interval, Duration::from_millis(200));
    let e = err(ServeOptions {
        election_timeout: Some(60_000),
        ..opts()
    });
    assert!(e.contains("is too long"), "{e}");
    let e = err(ServeOptions {
        heartbeat_interval: Some(0),
        ..opts()
    });
    assert_eq!(e, "--heartbeat-interval must be greater than 0");
}

#[test]
fn log_level_is_checked() {
    let e = err(ServeOptions {
        log_level: Some("loud".into()),
        ..opts()
    });
    assert_eq!(
        e,
        "invalid value \"loud\" for --log-level: valid values are trace, debug, info, warn, error"
    );
    let cfg = ServeOptions {
        log_level: Some("DEBUG".into()),
        ..opts()
    }
    .resolve()
    .unwrap();
    assert_eq!(cfg.log_level, "debug");
}

#[test]
fn yaml_uses_etcds_keys() {
    let yaml = "\
# a comment
name: infra1
data-dir: /var/lib/kvd
listen-client-urls: http://127.0.0.1:2379,http://127.0.0.1:3379
advertise-client-urls: http://127.0.0.1:2379
listen-peer-urls: http://127.0.0.1:2380
initial-advertise-peer-urls: http://127.0.0.1:2380
initial-cluster: infra1=http://127.0.0.1:2380
initial-cluster-state: 'new'
initial-cluster-token: tok
heartbeat-interval: 50
election-timeout: 500
snapshot-count: 7
quota-backend-bytes: 8589934592
backend-cache-bytes: 33554432
max-request-bytes: 1024
max-txn-ops: 3
log-level: warn
";
    let cfg = ServeOptions::from_yaml(yaml, Path::new("f.yaml"))
        .unwrap()
        .resolve()
        .unwrap();
    assert_eq!(cfg.name, "infra1");
    assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/kvd"));
    assert_eq!(cfg.listen_client_addrs.len(), 2);
    assert_eq!(cfg.initial_cluster_token, "tok");
    assert_eq!(cfg.heartbeat_interval, Duration::from_millis(50));
    assert_eq!(cfg.election_timeout, Duration::from_millis(500));
    assert_eq!(cfg.snapshot_count, 7);
    assert_eq!(cfg.quota_backend_bytes, 8_589_934_592);
    assert_eq!(cfg.backend_cache_bytes, 32 << 20);
    assert_eq!(cfg.max_request_bytes, 1024);
    assert_eq!(cfg.max_txn_ops, 3);
    assert_eq!(cfg.log_level, "warn");
}

#[test]
fn example_config_is_valid_and_all_defaults() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.yaml"));
    let file = ServeOptions::from_file(path).unwrap();
    // It spells out every key (all 22 of ServeOptions but the discovery
    // ones, which exclude initial-cluster)...
    let text = std::fs::read_to_string(path).unwrap();
    let keys: serde_yaml::Mapping = serde_yaml::from_str(&text).unwrap();
    assert_eq!(keys.len(), 22);
    // ...each at its default.
    let from_file = format!("{:?}", file.resolve().unwrap());
    let defaults = format!("{:?}", opts().resolve().unwrap());
    assert_eq!(from_file, defaults);
}

#[test]
fn empty_yaml_sets_nothing() {
    for text in ["", "\n# only a comment\n", "---\n"] {
        assert_eq!(
            ServeOptions::from_yaml(text, Path::new("f")).unwrap(),
            opts()
        );
    }
}

#[test]
fn bad_yaml_is_one_clear_line() {
    let e = ServeOptions::from_yaml("name: a\nenable-pprof: true\n", Path::new("c.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("invalid config file c.yaml: unknown field `enable-pprof`"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
    let e = ServeOptions::from_yaml("name: [a\n", Path::new("c.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("invalid config file c.yaml: "), "{e}");
    assert!(!e.contains('\n'), "{e}");
    let e = ServeOptions::from_yaml("heartbeat-interval: fast\n", Path::new("c.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid type"), "{e}");
}

#[test]
fn unreadable_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let e = load(opts(), Some(&missing)).unwrap_err().to_string();
    assert!(e.starts_with("cannot read config file "), "{e}");
    assert!(e.contains("no such file or directory"), "{e}");
}

#[test]
fn overrides_win_over_the_file_and_the_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvd.yaml");
    std::fs::write(&path, "name: fromfile\nsnapshot-count: 5\nmax-txn-ops: 9\n").unwrap();
    let cfg = load(
        ServeOptions {
            name: Some("fromflag".into()),
            snapshot_count: Some(6),
            ..opts()
        },
        Some(&path),
    )
    .unwrap();
    assert_eq!(cfg.name, "fromflag");
    assert_eq!(cfg.snapshot_count, 6);
    assert_eq!(cfg.max_txn_ops, 9);
    assert_eq!(cfg.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
    assert_eq!(cfg.data_dir, PathBuf::from("./fromflag.kvd"));
}

#[test]
fn jwt_options_are_parsed_as_etcd_parses_them() {
    use crate::modes::serve::security::jwt_options;
    assert_eq!(jwt_options("simple"), Ok(None));
    let o = jwt_options("jwt,pub-key=a.pem,priv-key=b.pem,sign-method=RS256,ttl=10m")
        .unwrap()
        .unwrap();
    assert_eq!(o.sign_method, "RS256");
    assert_eq!(o.ttl, Duration::from_secs(600));
    assert!(jwt_options("jwt,pub-key=a.pem").is_err());
    assert!(jwt_options("jwt,sign-method=RS256,sign-method=RS256").is_err());
    assert!(jwt_options("jwt,sign-method=RS256,color=red").is_err());
    assert!(jwt_options("jwt,sign-method").is_err());
}

#[test]
fn the_http_face_from_yaml_and_defaults() {
    let cfg = opts().resolve().unwrap();
    assert_eq!(cfg.http.cors, vec!["*".to_string()]);
    assert!(cfg.http.enable_v2);
    assert!(!cfg.http.enable_ui);
    let file = ServeOptions::from_yaml(
        "cors: http://a.example:80, http://b.example:8080\nenable-v2: false\nenable-ui: true\ndiscovery-srv: example.com\n",
        Path::new("f"),
    )
    .unwrap();
    assert_eq!(file.discovery_srv.as_deref(), Some("example.com"));
    let cfg = file.resolve().unwrap();
    assert_eq!(
        cfg.http.cors,
        vec!["http://a.example:80", "http://b.example:8080"]
    );
    assert!(!cfg.http.enable_v2);
    assert!(cfg.http.enable_ui);
}
