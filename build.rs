//! Build steps: (1) the gRPC code of etcd's lock, election and auth
//! services from `proto/` (the etcd-client crate generates them but keeps
//! their server traits or some of their messages private), with etcd's
//! header and key-value types taken from etcd-client, and the Watch
//! service's server, whose responses carry pre-encoded events
//! (`core::api::watch::WatchOut`); (2) the descriptors
//! of every etcd v3 service (`proto/gateway`, lock, election) for the JSON
//! gateway, as `$OUT_DIR/gateway.bin`; (3) a check of the vendored h2 and
//! fjall (see `vendor/*/KVD-PATCH.md`): the build fails when Cargo.lock
//! shows a `[patch.crates-io]` entry unused or the crate taken from
//! crates.io instead, which a dependency bump can cause silently (Cargo
//! only warns). The patched h2 is what lets etcd's Go clients talk to kvd
//! at all; the patched fjall keeps a storage worker from spinning; (4) the web
//! console's assets (`ui/`), each gzipped, listed in `$OUT_DIR/ui_assets.rs`
//! for `include_bytes!` (the console is embedded in the binary).

use std::process::ExitCode;

fn main() -> ExitCode {
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=ui");
    let generated = tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .extern_path(
            ".etcdserverpb.ResponseHeader",
            "::etcd_client::proto::PbResponseHeader",
        )
        .extern_path(".mvccpb.KeyValue", "::etcd_client::proto::PbKeyValue")
        .extern_path(
            ".etcdserverpb.WatchRequest",
            "::etcd_client::proto::PbWatchRequest",
        )
        .extern_path(
            ".etcdserverpb.WatchResponse",
            "crate::core::api::watch::WatchOut",
        )
        .compile_protos(
            &[
                "proto/v3lockpb/v3lock.proto",
                "proto/v3electionpb/v3election.proto",
                "proto/etcdserverpb/auth.proto",
                "proto/etcdserverpb/watch.proto",
            ],
            &["proto"],
        );
    if let Err(e) = generated {
        eprintln!("error: cannot generate the lock, election and auth services from proto/: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = gateway_descriptors() {
        eprintln!("error: cannot build the JSON gateway's descriptors from proto/gateway: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = ui_assets() {
        eprintln!("error: cannot embed the web console's assets from ui/: {e}");
        return ExitCode::FAILURE;
    }
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return ExitCode::SUCCESS;
    };
    let Ok(lock) = std::fs::read_to_string(std::path::Path::new(&dir).join("Cargo.lock")) else {
        // No lock file yet (a fresh checkout resolves one first).
        return ExitCode::SUCCESS;
    };
    for name in VENDORED {
        if let Err(problem) = check_vendored(&lock, name) {
            eprintln!(
                "error: {problem}; kvd needs its patched {name} (vendor/{name}/KVD-PATCH.md): \
                 update vendor/{name} to the version the dependencies now ask for and re-apply the patch"
            );
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Runs protoc (`$PROTOC`, else `protoc` on the path, as prost-build does)
/// for a FileDescriptorSet of etcd's services with their imports.
fn gateway_descriptors() -> Result<(), String> {
    let out = std::env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?;
    let protoc = std::env::var("PROTOC").unwrap_or_else(|_| "protoc".to_string());
    let status = std::process::Command::new(&protoc)
        .args(["-Iproto/gateway", "-Iproto", "--include_imports"])
        .arg(format!("--descriptor_set_out={out}/gateway.bin"))
        .args([
            "proto/gateway/etcdserverpb/rpc.proto",
            "proto/v3lockpb/v3lock.proto",
            "proto/v3electionpb/v3election.proto",
        ])
        .status()
        .map_err(|e| format!("{protoc}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{protoc} exited with {status}"))
    }
}

/// Gzips every file under `ui/` into `$OUT_DIR/ui/` and writes
/// `$OUT_DIR/ui_assets.rs`: a slice of `crate::core::api::ui::Asset`
/// (path below `/ui/`, content type, CRC-32 of the content as the ETags of
/// both encodings, the bytes, the gzipped bytes), sorted by path; dot
/// files are left out.
fn ui_assets() -> Result<(), String> {
    use std::io::Write as _;
    let out =
        std::path::PathBuf::from(std::env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?);
    let root = std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").map_err(|e| format!("CARGO_MANIFEST_DIR: {e}"))?,
    )
    .join("ui");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else {
                let name = path
                    .strip_prefix(&root)
                    .map_err(|e| e.to_string())?
                    .to_string_lossy()
                    .replace('\\', "/");
                files.push((name, path));
            }
        }
    }
    // Sorted by the served path, which core::api::ui binary-searches.
    files.sort();
    let mut table = String::from("&[\n");
    for (name, path) in files {
        let content_type = match path.extension().and_then(|e| e.to_str()) {
            Some("html") => "text/html; charset=utf-8",
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            Some("png") => "image/png",
            _ => "text/plain; charset=utf-8",
        };
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut crc = flate2::Crc::new();
        crc.update(&bytes);
        let crc = crc.sum();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes).map_err(|e| e.to_string())?;
        let gzipped = gz.finish().map_err(|e| e.to_string())?;
        let gz_path = out.join("ui").join(format!("{name}.gz"));
        if let Some(parent) = gz_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&gz_path, gzipped).map_err(|e| format!("{}: {e}", gz_path.display()))?;
        table.push_str(&format!(
            "    Asset {{ path: {name:?}, content_type: {content_type:?}, etag: \"\\\"{crc:08x}\\\"\", etag_gzipped: \"\\\"{crc:08x}-gz\\\"\", bytes: include_bytes!({:?}), gzipped: include_bytes!({:?}) }},\n",
            path.display().to_string(),
            gz_path.display().to_string(),
        ));
    }
    table.push(']');
    std::fs::write(out.join("ui_assets.rs"), table).map_err(|e| format!("ui_assets.rs: {e}"))
}

/// The crates kvd builds from `vendor/<name>` with a patch of its own.
const VENDORED: [&str; 2] = ["h2", "fjall"];

/// `Err` when the patch of crate `name` is unused or the crate comes from a
/// registry.
fn check_vendored(lock: &str, name: &str) -> Result<(), String> {
    let quoted = format!("\"{name}\"");
    for block in lock.split("[[").skip(1) {
        let mut lines = block.lines();
        let kind = lines.next().unwrap_or_default();
        let block_name = block
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .unwrap_or_default();
        if block_name != quoted {
            continue;
        }
        if kind.starts_with("patch.unused") {
            return Err(format!(
                "the [patch.crates-io] {name} in Cargo.toml is unused"
            ));
        }
        if block.lines().any(|l| l.starts_with("source = ")) {
            return Err(format!("a {name} from crates.io is in the build"));
        }
    }
    Ok(())
}
