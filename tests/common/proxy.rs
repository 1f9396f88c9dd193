//! `kvd proxy` processes for the tests: started in front of a cluster,
//! with `--metrics-addr` so that their health and metrics can be read
//! whatever their client port speaks.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{free_port, http_get, Server, ServerBinary, ServerSpec};

/// A running `kvd proxy`, its port and its `--metrics-addr` port.
pub struct Proxy {
    /// Killed on drop.
    pub server: Server,
    pub port: u16,
    pub metrics_port: u16,
}

impl Proxy {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint()]
    }

    pub async fn metric(&self, name: &str) -> i64 {
        let page = http_get(self.metrics_port, "/metrics")
            .await
            .expect("metrics")
            .body;
        page.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .map(|v| v as i64)
            .unwrap_or_else(|| panic!("no {name} in {page}"))
    }
}

pub fn kvd_spec(args: Vec<String>, dir: &Path, log: &str) -> ServerSpec {
    let mut spec = ServerSpec::new(args, dir, &dir.join(log));
    spec.binary = ServerBinary {
        program: env!("CARGO_BIN_EXE_kvd").into(),
        prefix: vec!["proxy".to_string()],
        is_etcd: false,
    };
    spec
}

/// Starts a proxy in front of `endpoints` and waits for its `/health`
/// (on `--metrics-addr`, which every proxy here has).
pub async fn start_proxy(dir: &Path, name: &str, endpoints: &[String], extra: &[&str]) -> Proxy {
    let port = free_port();
    let metrics_port = free_port();
    let mut args = vec![
        format!("--listen-addr=127.0.0.1:{port}"),
        format!("--endpoints={}", endpoints.join(",")),
        format!("--metrics-addr=http://127.0.0.1:{metrics_port}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut server = Server::start(kvd_spec(args, dir, &format!("{name}.log")));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http_get(metrics_port, "/health").await {
            if r.status == 200 {
                break;
            }
        }
        assert!(
            server.is_running(),
            "proxy exited:\n{}",
            server.log_tail(40)
        );
        assert!(
            Instant::now() < deadline,
            "proxy not healthy:\n{}",
            server.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Proxy {
        server,
        port,
        metrics_port,
    }
}
