//! `cylance-logs status`: the checkpoint, for people or (`--json`) monitoring.
//!
//! Reads without taking the run lock: the checkpoint is replaced by rename, so
//! a reader always sees a whole version.

use crate::checkpoint::{self, Checkpoint};
use crate::config::StoreSettings;
use crate::timefmt::display;
use anyhow::Result;
use std::io::Write;

pub fn show(store: &StoreSettings, json: bool) -> Result<()> {
    let path = checkpoint::path_in(&store.state_dir);
    let checkpoint = Checkpoint::load(&path)?;
    let text = match (&checkpoint, json) {
        (_, true) => {
            let doc = serde_json::json!({
                "checkpoint_path": path,
                "checkpoint": checkpoint,
            });
            serde_json::to_string_pretty(&doc).expect("serializes") + "\n"
        }
        (None, false) => format!(
            "no checkpoint yet in {} (no run has committed there)\n",
            store.state_dir.display()
        ),
        (Some(checkpoint), false) => for_people(checkpoint, &path),
    };
    std::io::stdout().write_all(text.as_bytes()).map_err(|e| {
        crate::error::fail(
            crate::error::ExitKind::Io,
            format!("writing to standard output: {e}"),
        )
    })
}

fn for_people(checkpoint: &Checkpoint, path: &std::path::Path) -> String {
    let mut out = format!(
        "checkpoint {} (tenant {})\n",
        path.display(),
        checkpoint.tenant_id
    );
    if let Some(run) = &checkpoint.last_run {
        out += &format!(
            "last run: {} started {}, finished {}, exit {}{}\n",
            run.command,
            display(run.started),
            display(run.finished),
            run.exit_code,
            run.error
                .as_ref()
                .map_or(String::new(), |e| format!(": {e}"))
        );
    }
    for (name, state) in &checkpoint.sources {
        out += &format!(
            "{name}: written from {} to {} (cursor), {} events written, last success {}, {} keys kept\n",
            display(state.covered_since),
            display(state.cursor),
            state.events_written,
            state.last_success.map_or("never".to_string(), display),
            state.seen.len()
        );
    }
    if let Some(mark) = &checkpoint.output {
        out += &format!("output: {} at byte {}\n", mark.path.display(), mark.size);
    }
    out
}
