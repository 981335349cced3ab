//! Progress of transfers: bars on a terminal (indicatif), one log line per blob otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use specreg_registry::copy::{BlobAction, Progress};
use specreg_registry::reference::Digest;

/// Bars when stderr is a terminal, else log lines.
pub fn for_stderr() -> Arc<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Arc::new(Bars::new())
    } else {
        Arc::new(Lines)
    }
}

fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}

fn action_word(a: &BlobAction) -> String {
    match a {
        BlobAction::Copied => "copied".to_owned(),
        BlobAction::Skipped => "already there".to_owned(),
        BlobAction::Mounted { from } => format!("mounted from {from}"),
    }
}

struct Lines;

impl Progress for Lines {
    fn image_started(&self, source: &str, blobs: usize, bytes: u64) {
        tracing::info!(%source, blobs, bytes, "copying");
    }
    fn blob_finished(&self, digest: &Digest, size: u64, action: &BlobAction) {
        tracing::info!(blob = %digest, size, "{}", action_word(action));
    }
    fn manifest_put(&self, digest: &Digest, media_type: &str, copied: bool) {
        tracing::info!(manifest = %digest, %media_type, "{}", if copied { "copied" } else { "already there" });
    }
}

struct Bars {
    multi: MultiProgress,
    total: Mutex<Option<ProgressBar>>,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    fn new() -> Self {
        Bars { multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()), total: Mutex::new(None), bars: Mutex::new(HashMap::new()) }
    }
}

impl Progress for Bars {
    fn image_started(&self, source: &str, _blobs: usize, bytes: u64) {
        let bar = self.multi.add(ProgressBar::new(bytes));
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .expect("template")
                .progress_chars("=> "),
        );
        bar.set_message(source.to_owned());
        *self.total.lock().expect("lock") = Some(bar);
    }
    fn blob_started(&self, digest: &Digest, size: u64) {
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(ProgressStyle::with_template("  {msg} {bytes:>10}/{total_bytes:10}").expect("template"));
        bar.set_message(short(digest).to_owned());
        self.bars.lock().expect("lock").insert(digest.clone(), bar);
    }
    fn blob_bytes(&self, digest: &Digest, n: u64) {
        if let Some(b) = self.bars.lock().expect("lock").get(digest) {
            b.inc(n);
        }
        if let Some(t) = self.total.lock().expect("lock").as_ref() {
            t.inc(n);
        }
    }
    fn blob_finished(&self, digest: &Digest, _size: u64, action: &BlobAction) {
        if let Some(b) = self.bars.lock().expect("lock").remove(digest) {
            b.finish_and_clear();
            self.multi.remove(&b);
        }
        if !matches!(action, BlobAction::Copied) {
            let _ = self.multi.println(format!("  {} {}", short(digest), action_word(action)));
        }
    }
    fn manifest_put(&self, _digest: &Digest, _media_type: &str, _copied: bool) {
        if let Some(t) = self.total.lock().expect("lock").take() {
            t.finish_and_clear();
        }
    }
}
