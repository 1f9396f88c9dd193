//! Progress bars of the long client operations (indicatif), drawn on stderr
//! only when it is a terminal and the output is not machine-read (`-w
//! json`): scripts and cron jobs see nothing.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether progress may be drawn: stderr is a terminal and `quiet` (e.g.
/// `-w json`) is not asked.
pub fn visible(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// A bar over `total` bytes (bytes, rate, ETA), hidden unless [`visible`].
pub fn bytes(total: u64, quiet: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), target(quiet));
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A spinner counting `unit`s of unknown total, hidden unless [`visible`].
pub fn counter(unit: &'static str, quiet: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, target(quiet));
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{spinner}} {{msg}} {{human_pos}} {unit} ({{per_sec}})"
    )) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

fn target(quiet: bool) -> ProgressDrawTarget {
    if visible(quiet) {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A bar over `total` items (count, percent, ETA), hidden unless [`visible`].
pub fn items(total: u64, quiet: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), target(quiet));
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {percent}% eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
