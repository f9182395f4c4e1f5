//! Progress display for long commands, drawn only when stderr is a terminal: byte bars for
//! transfers and packing, and a spinner for work the client can only watch from outside.
//! Sizes and rates are written by [`units::size`], so bars and summaries share one unit
//! system.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

use crate::units;

/// A byte-count bar towards `total`, or, when the total is not known (`0`), a running count;
/// a hidden bar when progress is off.
pub fn bytes(enabled: bool, total: u64, message: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let (bar, template) = if total == 0 {
        let bar = ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        (bar, "  {spinner} {msg} {done} {rate} {elapsed}")
    } else {
        (
            ProgressBar::new(total),
            "  {msg} [{bar:30}] {done}/{total} {rate} {eta}",
        )
    };
    bar.set_style(with_units(template).progress_chars("=> "));
    bar.set_message(message.to_owned());
    bar
}

/// A spinner with a message the caller updates, for work done elsewhere (a node mirroring);
/// hidden when progress is off.
pub fn activity(enabled: bool, message: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(with_units("  {spinner} {msg} ({elapsed})"));
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// `template` with `{done}`, `{total}` and `{rate}` written in the units summaries use.
fn with_units(template: &str) -> ProgressStyle {
    let style =
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    style
        .with_key("done", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&units::size(s.pos()));
        })
        .with_key("total", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&units::size(s.len().unwrap_or(0)));
        })
        .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            // Whole bytes per second are plenty for a display.
            let per_sec = s.per_sec();
            let _ = write!(w, "{}/s", units::size(per_sec as u64));
        })
}
