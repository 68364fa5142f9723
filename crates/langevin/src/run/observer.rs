//! What a run tells the outside world: the [`Observer`] trait.

use langevin_core::Result;

use super::{Checkpoint, RunConfig, RunOutput, Samples, Verdict};

/// The run about to start (or continue).
#[derive(Debug, Clone, Copy)]
pub struct RunInfo<'a> {
    /// One name per scalar parameter (ravel order).
    pub names: &'a [String],
    pub config: &'a RunConfig,
    /// Number of chains.
    pub chains: usize,
}

/// One kept draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Draw {
    pub chain: usize,
    /// Index of the draw in its chain (0-based).
    pub index: usize,
    /// Parameter values (ravel order).
    pub values: Vec<f64>,
    /// Log density the update evaluated (see [`langevin_core::TransformState::log_density`]).
    pub log_density: f64,
    /// Whether the update that produced this draw diverged (was skipped).
    pub diverged: bool,
}

/// Sees a run's events. Every method has a default that does nothing, so an
/// observer implements only what it needs. All but [`Observer::on_progress`]
/// and [`Observer::interrupted`] are called from the thread that called
/// [`super::run`], between rounds; those two are called from the worker
/// threads (hence `Sync`). An `Err` from an observer stops the run and is
/// returned.
pub trait Observer<S, C>: Sync {
    /// Before the first round; `start` is the checkpoint the run starts from
    /// (`steps_done == 0` for a fresh run).
    fn on_start(&mut self, _info: &RunInfo<'_>, _start: &Checkpoint<S, C>) -> Result<()> {
        Ok(())
    }

    /// The draws of one round, draw-major (draw `i` of every chain, then
    /// draw `i + 1`); also after a round that ended on an error or a stop.
    fn on_draws(&mut self, _draws: &[Draw]) -> Result<()> {
        Ok(())
    }

    /// After a complete round in which no chain stopped: the state to
    /// continue from.
    fn on_round(&mut self, _checkpoint: &Checkpoint<S, C>) -> Result<()> {
        Ok(())
    }

    /// A run until converged ([`super::Until`]) kept every second draw of
    /// every chain and doubled its thinning interval: `samples` is every
    /// draw kept now (the draws delivered so far, thinned). Called before
    /// the round's [`Observer::on_round`].
    fn on_thinned(&mut self, _samples: &Samples) -> Result<()> {
        Ok(())
    }

    /// The convergence verdict after a round of a run until converged.
    fn on_check(&mut self, _verdict: &Verdict) {}

    /// After the last round (also after a stop).
    fn on_finish(&mut self, _out: &RunOutput<S>) -> Result<()> {
        Ok(())
    }

    /// `steps` more updates of some chain (called every
    /// [`super::PROGRESS_TICK`] steps of each chain, from worker threads).
    fn on_progress(&self, _steps: u64) {}

    /// Polled every [`super::PROGRESS_TICK`] steps of each chain: `true`
    /// ends the run after the current step of every chain, with
    /// [`super::Stop::Interrupted`] (no checkpoint is written for the
    /// partial round).
    fn interrupted(&self) -> bool {
        false
    }
}

/// No observer.
impl<S, C> Observer<S, C> for () {}

impl<S, C, O: Observer<S, C> + ?Sized> Observer<S, C> for &mut O {
    fn on_start(&mut self, info: &RunInfo<'_>, start: &Checkpoint<S, C>) -> Result<()> {
        (**self).on_start(info, start)
    }
    fn on_draws(&mut self, draws: &[Draw]) -> Result<()> {
        (**self).on_draws(draws)
    }
    fn on_round(&mut self, checkpoint: &Checkpoint<S, C>) -> Result<()> {
        (**self).on_round(checkpoint)
    }
    fn on_thinned(&mut self, samples: &Samples) -> Result<()> {
        (**self).on_thinned(samples)
    }
    fn on_check(&mut self, verdict: &Verdict) {
        (**self).on_check(verdict)
    }
    fn on_finish(&mut self, out: &RunOutput<S>) -> Result<()> {
        (**self).on_finish(out)
    }
    fn on_progress(&self, steps: u64) {
        (**self).on_progress(steps)
    }
    fn interrupted(&self) -> bool {
        (**self).interrupted()
    }
}

/// Two observers, called in order.
impl<S, C, A: Observer<S, C>, B: Observer<S, C>> Observer<S, C> for (A, B) {
    fn on_start(&mut self, info: &RunInfo<'_>, start: &Checkpoint<S, C>) -> Result<()> {
        self.0.on_start(info, start)?;
        self.1.on_start(info, start)
    }
    fn on_draws(&mut self, draws: &[Draw]) -> Result<()> {
        self.0.on_draws(draws)?;
        self.1.on_draws(draws)
    }
    fn on_round(&mut self, checkpoint: &Checkpoint<S, C>) -> Result<()> {
        self.0.on_round(checkpoint)?;
        self.1.on_round(checkpoint)
    }
    fn on_thinned(&mut self, samples: &Samples) -> Result<()> {
        self.0.on_thinned(samples)?;
        self.1.on_thinned(samples)
    }
    fn on_check(&mut self, verdict: &Verdict) {
        self.0.on_check(verdict);
        self.1.on_check(verdict);
    }
    fn on_finish(&mut self, out: &RunOutput<S>) -> Result<()> {
        self.0.on_finish(out)?;
        self.1.on_finish(out)
    }
    fn on_progress(&self, steps: u64) {
        self.0.on_progress(steps);
        self.1.on_progress(steps);
    }
    fn interrupted(&self) -> bool {
        self.0.interrupted() || self.1.interrupted()
    }
}
