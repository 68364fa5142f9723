//! [`MpiTeam`]: the ranks of `MPI_COMM_WORLD` as a [`Team`] (cargo feature
//! `mpi`, with rsmpi over the system's MPI, Open MPI on Debian).

use mpi::datatype::PartitionMut;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;

use langevin_core::{Error, Result};

use super::team::Team;

/// The processes of `MPI_COMM_WORLD`. MPI must have been initialised
/// ([`mpi::initialize`], re-exported as `langevin::mpi`) by the thread that
/// makes the team and calls [`super::run_team`]; the chains' worker threads
/// make no MPI calls.
pub struct MpiTeam {
    world: SimpleCommunicator,
}

impl MpiTeam {
    /// `MPI_COMM_WORLD`.
    pub fn world() -> Self {
        Self {
            world: SimpleCommunicator::world(),
        }
    }

    /// End every process of the job with `code` (`MPI_Abort`): for an error
    /// outside [`super::run_team`]'s collectives, where other ranks may be
    /// waiting for this one.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

fn too_big(n: usize) -> Error {
    Error::Data(format!(
        "a message of {n} bytes is too large for one MPI call"
    ))
}

impl Team for MpiTeam {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn gather(&self, bytes: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        let root = self.world.process_at_rank(0);
        let len = Count::try_from(bytes.len()).map_err(|_| too_big(bytes.len()))?;
        if self.world.rank() == 0 {
            let mut counts = vec![0 as Count; self.size()];
            root.gather_into_root(&len, &mut counts[..]);
            let mut displs = Vec::with_capacity(counts.len());
            let mut total: usize = 0;
            for &c in &counts {
                displs.push(Count::try_from(total).map_err(|_| too_big(total))?);
                total += c as usize;
            }
            let mut buf = vec![0u8; total];
            {
                let mut part = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
                root.gather_varcount_into_root(bytes, &mut part);
            }
            let mut out = Vec::with_capacity(counts.len());
            for (&c, &d) in counts.iter().zip(&displs) {
                out.push(buf[d as usize..d as usize + c as usize].to_vec());
            }
            Ok(Some(out))
        } else {
            root.gather_into(&len);
            root.gather_varcount_into(bytes);
            Ok(None)
        }
    }

    fn broadcast(&self, bytes: Vec<u8>) -> Result<Vec<u8>> {
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        let mut buf = if self.world.rank() == 0 {
            bytes
        } else {
            vec![0u8; len as usize]
        };
        // In pieces below 2^31 bytes (MPI counts are `int`).
        for piece in buf.chunks_mut(1 << 30) {
            root.broadcast_into(piece);
        }
        Ok(buf)
    }
}

/// The ranks of `MPI_COMM_WORLD` summing a data-parallel run's gradients
/// ([`crate::shard::Allreduce`]): one `MPI_Allgather` of every rank's
/// buffer, then the sum in rank order on every rank (MPI's own
/// `MPI_Allreduce` may add in any order; this gives the same bits on every
/// rank and for every run with the same number of ranks). Calls must come
/// from one thread at a time (a data-parallel run advances its chains on
/// one thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct MpiAllreduce;

impl crate::shard::Allreduce for MpiAllreduce {
    fn rank(&self) -> usize {
        SimpleCommunicator::world().rank() as usize
    }

    fn size(&self) -> usize {
        SimpleCommunicator::world().size() as usize
    }

    fn sum(&self, buf: &mut [f64]) -> Result<()> {
        let world = SimpleCommunicator::world();
        let k = world.size() as usize;
        if k == 1 {
            return Ok(());
        }
        let n = buf.len();
        Count::try_from(n * k).map_err(|_| too_big(8 * n * k))?;
        let mut all = vec![0.0f64; n * k];
        world.all_gather_into(&buf[..], &mut all[..]);
        buf.copy_from_slice(&all[..n]);
        for part in all.chunks_exact(n).skip(1) {
            for (b, v) in buf.iter_mut().zip(part) {
                *b += v;
            }
        }
        Ok(())
    }
}
