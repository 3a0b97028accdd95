//! What a person sees while a run works: a progress bar on stderr when stderr is a terminal,
//! with the rows and bytes archived so far; otherwise an INFO progress line every 30 s. Log
//! lines are written around the bar ([`LogWriter`]), never onto it.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use archiver_engine::pipeline::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar on screen now, if any: log lines are drawn above it.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Writes log lines to stderr, clearing the progress bar for the line and drawing it again after.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let active = ACTIVE.lock().expect("bar lock").clone();
        match active {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A progress bar of `total` items on stderr; hidden unless `wanted` and stderr is a terminal.
/// Log lines go around it until it is finished.
pub fn progress_bar(wanted: bool, total: u64) -> ProgressBar {
    progress_bar_of(wanted, total, "items")
}

/// A progress bar of `total` `unit`s (plural), as [`progress_bar`].
pub fn progress_bar_of(wanted: bool, total: u64, unit: &str) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    *ACTIVE.lock().expect("bar lock") = Some(bar.clone());
    bar.set_style(
        ProgressStyle::with_template(&format!("{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{msg}}"))
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Clears the bar and sends log lines straight to stderr again.
pub fn finish(bar: &ProgressBar) {
    bar.finish_and_clear();
    ACTIVE.lock().expect("bar lock").take();
}

/// Keeps the bar's message at the rows and MiB archived so far, until the task is aborted; with
/// no bar on screen, logs the same at INFO every 30 s.
pub fn tick(bar: ProgressBar, progress: Arc<Progress>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_line = Instant::now();
        loop {
            let (rows, mib) = (progress.rows.load(Ordering::Relaxed), progress.bytes.load(Ordering::Relaxed) / (1024 * 1024));
            bar.set_message(format!("{rows} rows, {mib} MiB"));
            if bar.is_hidden() && last_line.elapsed() >= Duration::from_secs(30) {
                tracing::info!(items_done = bar.position(), items = bar.length(), rows, mib, "progress");
                last_line = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}
