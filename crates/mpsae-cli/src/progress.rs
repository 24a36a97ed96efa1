//! Training progress: a live bar on a terminal, plain log lines otherwise (the run's
//! `metrics.jsonl` is written by the library's session).

use indicatif::{ProgressBar, ProgressStyle};
use mpsae::train::{EpochReport, Observer, StepReport};
use std::time::Instant;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal, plain lines otherwise.
    Auto,
    /// Always a bar.
    Bar,
    /// Plain log lines.
    Plain,
    /// Nothing but errors.
    Quiet,
}

/// The CLI's observer.
pub struct Reporter {
    bar: Option<ProgressBar>,
    plain: bool,
    start: Instant,
    rows: u64,
    log_every: u64,
}

impl Reporter {
    /// A reporter for a run of `total` steps starting at `done`.
    pub fn new(mode: ProgressMode, total: u64, done: u64) -> Self {
        let bar_wanted = match mode {
            ProgressMode::Auto => crate::common::is_terminal(),
            ProgressMode::Bar => true,
            _ => false,
        };
        let bar = bar_wanted.then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .unwrap(),
            );
            b.set_position(done);
            b
        });
        Reporter {
            bar,
            plain: mode == ProgressMode::Plain || (mode == ProgressMode::Auto && !bar_wanted),
            start: Instant::now(),
            rows: 0,
            log_every: (total / 20).max(1),
        }
    }

    /// Closes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Observer for Reporter {
    fn stop_requested(&mut self) -> bool {
        crate::signals::received().is_some()
    }

    fn on_step(&mut self, r: &StepReport) {
        self.rows += r.rows as u64;
        let rate = self.rows as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        let text = format!(
            "loss {:.4e}  EV {:.4}  L0 {:.2}  dead {:.1}%  {:.0} rows/s{}",
            r.loss,
            r.explained_variance,
            r.l0,
            100.0 * r.dead_ratio,
            rate,
            if r.skipped { "  (skipped: non-finite)" } else { "" }
        );
        if let Some(b) = &self.bar {
            b.set_position(r.step);
            b.set_message(text);
        } else if self.plain && (r.step % self.log_every == 0 || r.step == r.total_steps || r.skipped) {
            eprintln!("step {}/{}  lr {:.2e}  {text}", r.step, r.total_steps, r.lr);
        }
    }

    fn on_epoch(&mut self, r: &EpochReport) {
        let line = format!(
            "Epoch[{}{}] step {}, Loss: {:.4e}, Explained variance: {:.4}, R2: {:.4}, L0: {:.2}, Dead Features: {:.1}%, Time: {:.2} seconds",
            r.epoch,
            if r.partial { ", partial" } else { "" },
            r.step,
            r.avg_loss,
            r.explained_variance,
            r.r2,
            r.l0,
            100.0 * r.dead_ratio,
            r.time_epoch
        );
        match &self.bar {
            Some(b) => b.println(line),
            None if self.plain => eprintln!("{line}"),
            None => {}
        }
    }
}
