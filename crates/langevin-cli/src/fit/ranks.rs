//! `fit` under `mpirun` (cargo feature `mpi`): the processes of the job as
//! a [`Team`] for the library's run loop ([`langevin::run::run_team`]).
//!
//! Without the feature, or when not started by an MPI launcher, there is
//! one process and nothing here does anything. Under a launcher, every rank
//! runs the same command: each prepares the data and the model, rank 0
//! alone writes the run folder and prints, and the run loop gives each rank
//! its block of chains. Errors: an error of the run itself ends it on every
//! rank after the same round (rank 0 prints it, the others exit with the
//! same code silently); an error outside the run's collectives (bad input
//! seen by one rank before the run) ends the whole job with `MPI_Abort`, so
//! no rank waits forever.

use std::sync::atomic::{AtomicBool, Ordering};

use langevin::run::Team;

/// Set once the run loop's collectives are over (whatever their outcome):
/// every rank then knows how the run ended.
static TEAM_DONE: AtomicBool = AtomicBool::new(false);

/// Whether MPI was started.
static STARTED: AtomicBool = AtomicBool::new(false);

/// Record that the run loop's collectives are over.
pub fn team_done() {
    TEAM_DONE.store(true, Ordering::SeqCst);
}

/// Whether an MPI launcher started this process.
#[cfg(feature = "mpi")]
fn under_launcher() -> bool {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_RANK",
        "MPI_LOCALNRANKS",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
}

/// MPI, started for the life of the returned guard (finalised when it is
/// dropped). `None` without the feature or a launcher.
#[cfg(feature = "mpi")]
pub fn start() -> Option<langevin::mpi::environment::Universe> {
    if !under_launcher() {
        return None;
    }
    let u = langevin::mpi::initialize();
    STARTED.store(u.is_some(), Ordering::SeqCst);
    u
}

/// Without the feature: nothing to start.
#[cfg(not(feature = "mpi"))]
pub fn start() -> Option<()> {
    None
}

/// The team of this job when it has more than one process.
pub fn team() -> Option<Box<dyn Team>> {
    if !STARTED.load(Ordering::SeqCst) {
        return None;
    }
    #[cfg(feature = "mpi")]
    {
        let t = langevin::run::MpiTeam::world();
        if t.size() > 1 {
            return Some(Box::new(t));
        }
    }
    None
}

/// What sums a data-parallel run's gradients: the ranks of
/// `MPI_COMM_WORLD` under a launcher, else this process alone.
pub fn reduce() -> Box<dyn langevin::shard::Allreduce> {
    #[cfg(feature = "mpi")]
    if STARTED.load(Ordering::SeqCst) {
        return Box::new(langevin::run::MpiAllreduce);
    }
    Box::new(langevin::run::Solo)
}

/// Report `err` as this process should and return the exit code (or end
/// the whole job when other ranks may be waiting for this one).
pub fn fail(err: &anyhow::Error) -> i32 {
    let code = crate::exit::code_for(err);
    let Some(team) = team() else {
        eprintln!("error: {err:#}");
        return code;
    };
    let rank = team.rank();
    let done = TEAM_DONE.load(Ordering::SeqCst);
    if rank == 0 {
        eprintln!("error: {err:#}");
    } else if done {
        // Rank 0 reports the run's end.
        return code;
    } else {
        // Give rank 0 the chance to report first (it fails the same way on
        // bad input, and ends the job).
        std::thread::sleep(std::time::Duration::from_secs(2));
        eprintln!("error (rank {rank}): {err:#}");
    }
    if !done {
        abort(code);
    }
    code
}

#[cfg(feature = "mpi")]
fn abort(code: i32) {
    use std::io::Write;
    let _ = std::io::stderr().flush();
    langevin::run::MpiTeam::world().abort(code)
}

#[cfg(not(feature = "mpi"))]
fn abort(_code: i32) {}
