//! The run on disk: draws streamed to `samples.csv`, checkpoints to
//! `checkpoint.json`.
//!
//! After every round [`RunFiles`] appends the round's draws (draw-major) to
//! `DIR/samples.csv`, flushes and fsyncs it, and, when checkpointing,
//! replaces `DIR/checkpoint.json` atomically (temporary file, fsync, rename,
//! fsync of the directory). The checkpoint holds the caller's own data
//! (`user`: for the CLI its arguments and resolved configuration), the byte
//! length and FNV-1a checksum of `samples.csv` at that moment, and the
//! [`Checkpoint`] (every chain's state, generator, cursor and counters).
//!
//! [`RunFiles::resume`] reads the checkpoint back, checks every field
//! against the run's configuration, checks the draws file's first
//! `samples_len` bytes against the checksum, cuts the rows a killed process
//! wrote after the checkpoint, and reads the draws back (shortest round-trip
//! numbers: the same bits). Since a chain's computation depends only on the
//! seed and its index and the row order does not depend on the round
//! length, a resumed run's `samples.csv` is byte-identical to an
//! uninterrupted run's.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use langevin_core::{Error, Result, TransformState};

use super::observer::{Draw, Observer, RunInfo};
use super::{Chain, Checkpoint, RunConfig};
use crate::samples::{CsvDrawWriter, Samples};

/// The draws file inside a run directory.
pub const SAMPLES_FILE: &str = "samples.csv";
/// The checkpoint file inside a run directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";
/// Version of the checkpoint format.
pub const CHECKPOINT_VERSION: u32 = 3;
/// The oldest checkpoint format still read (version 2 lacks the tuning,
/// warm-up and thinning fields, which default to none).
const OLDEST_CHECKPOINT_VERSION: u32 = 2;

/// `checkpoint.json`.
#[derive(Serialize, Deserialize)]
#[serde(bound(
    serialize = "S: Serialize, C: Serialize",
    deserialize = "S: DeserializeOwned, C: DeserializeOwned"
))]
struct CheckpointFile<S, C> {
    version: u32,
    /// The caller's data (what the run was started with).
    user: serde_json::Value,
    /// Byte length of `samples.csv` when the checkpoint was taken.
    samples_len: u64,
    /// FNV-1a checksum of those bytes.
    samples_hash: u64,
    steps_done: u64,
    chains: Vec<Chain<S, C>>,
    #[serde(default)]
    thin: Option<u64>,
    #[serde(default)]
    first_chain: usize,
}

/// The part of `checkpoint.json` that does not depend on the transform.
#[derive(Deserialize)]
struct CheckpointHead {
    version: u32,
    user: serde_json::Value,
    steps_done: u64,
}

/// Streams a run's draws to `DIR/samples.csv` and, when checkpointing,
/// writes `DIR/checkpoint.json` after every round (see the module docs).
pub struct RunFiles {
    dir: PathBuf,
    names: Vec<String>,
    writer: CsvDrawWriter,
    /// `Some`: write checkpoints holding this.
    user: Option<serde_json::Value>,
    /// The run index of the first chain written (set by `on_start`).
    first_chain: usize,
}

impl RunFiles {
    /// Start the files of a new run in `dir` (which must exist): create
    /// `samples.csv` with its header. `checkpoint_user`: `Some(data)` writes
    /// checkpoints holding `data` (for the caller to check on resume).
    pub fn create(
        dir: impl AsRef<Path>,
        names: &[String],
        checkpoint_user: Option<serde_json::Value>,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let writer = CsvDrawWriter::create(dir.join(SAMPLES_FILE), names)?;
        Ok(Self {
            dir,
            names: names.to_vec(),
            writer,
            user: checkpoint_user,
            first_chain: 0,
        })
    }

    /// Continue the checkpointed run in `dir` with `config` over scalars
    /// `names`: validate `checkpoint.json` (format, every chain's counters
    /// against `config`, parameter lengths, the checksum of the draws file),
    /// cut `samples.csv` back to the checkpoint, and return the files (which
    /// keep checkpointing), the checkpoint to pass to [`super::run`] and the
    /// draws collected so far. `valid_cursor` checks each saved cursor (for
    /// example its number of rows). Errors name the file and the field.
    pub fn resume<S, C>(
        dir: impl AsRef<Path>,
        config: &RunConfig,
        names: &[String],
        valid_cursor: impl Fn(&C) -> bool,
    ) -> Result<(Self, Checkpoint<S, C>, Samples)>
    where
        S: TransformState,
        C: DeserializeOwned,
    {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(CHECKPOINT_FILE);
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&shown, e))?;
        let head: CheckpointHead = serde_json::from_str(&text)
            .map_err(|e| Error::checkpoint(&shown, "json", e.to_string()))?;
        check_version(head.version, &shown)?;
        let file: CheckpointFile<S, C> = serde_json::from_str(&text).map_err(|e| {
            Error::checkpoint(
                &shown,
                "chains",
                format!("not a saved state of this method and model: {e}"),
            )
        })?;
        let ck = Checkpoint {
            steps_done: file.steps_done,
            chains: file.chains,
            thin: file.thin,
            first_chain: file.first_chain,
        };
        ck.validate(config, names.len(), &shown)?;
        for (k, ch) in ck.chains.iter().enumerate() {
            if !valid_cursor(&ch.cursor) {
                return Err(Error::checkpoint(
                    &shown,
                    format!("chains[{k}].cursor"),
                    "not a valid position in this run's batches",
                ));
            }
        }
        let samples_path = dir.join(SAMPLES_FILE);
        let writer = CsvDrawWriter::resume(&samples_path, file.samples_len, file.samples_hash)?;
        let samples = if ck.chains.iter().all(|c| c.draws == 0) {
            Samples::new(names.to_vec(), ck.chains.len())
        } else {
            Samples::read_csv_from_chain(&samples_path, Some(file.samples_len), ck.first_chain)?
        };
        let sp = samples_path.display().to_string();
        if samples.names != names {
            return Err(Error::checkpoint(
                &sp,
                "header",
                "the parameter names differ from the run's",
            ));
        }
        if samples.chains.len() != ck.chains.len() {
            return Err(Error::checkpoint(
                &sp,
                "chain",
                format!(
                    "{} chains in the file, {} in the checkpoint",
                    samples.chains.len(),
                    ck.chains.len()
                ),
            ));
        }
        for (k, (tr, ch)) in samples.chains.iter().zip(&ck.chains).enumerate() {
            if tr.n_draws() != ch.draws {
                return Err(Error::checkpoint(
                    &sp,
                    format!("chain {k}"),
                    format!(
                        "{} draws in the file, the checkpoint says {}",
                        tr.n_draws(),
                        ch.draws
                    ),
                ));
            }
        }
        Ok((
            Self {
                dir,
                names: names.to_vec(),
                writer,
                user: Some(head.user),
                first_chain: ck.first_chain,
            },
            ck,
            samples,
        ))
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Flush and fsync the draws file.
    pub fn sync(&mut self) -> Result<()> {
        self.writer.sync()
    }

    /// Remove `checkpoint.json` (a finished run no longer needs it).
    pub fn remove_checkpoint(dir: impl AsRef<Path>) -> Result<()> {
        let p = dir.as_ref().join(CHECKPOINT_FILE);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(p.display(), e)),
        }
    }

    fn save<S: Serialize, C: Serialize>(&mut self, ck: &Checkpoint<S, C>) -> Result<()> {
        let Some(user) = &self.user else {
            return Ok(());
        };
        #[derive(Serialize)]
        struct Out<'a, S, C> {
            version: u32,
            user: &'a serde_json::Value,
            samples_len: u64,
            samples_hash: u64,
            steps_done: u64,
            chains: &'a [Chain<S, C>],
            #[serde(skip_serializing_if = "Option::is_none")]
            thin: Option<u64>,
            #[serde(skip_serializing_if = "super::is_zero")]
            first_chain: usize,
        }
        write_json_atomic(
            &self.dir.join(CHECKPOINT_FILE),
            &Out {
                version: CHECKPOINT_VERSION,
                user,
                samples_len: self.writer.len(),
                samples_hash: self.writer.hash(),
                steps_done: ck.steps_done,
                chains: &ck.chains,
                thin: ck.thin,
                first_chain: ck.first_chain,
            },
        )
    }
}

impl<S: Serialize, C: Serialize> Observer<S, C> for RunFiles {
    fn on_start(&mut self, _info: &RunInfo<'_>, start: &Checkpoint<S, C>) -> Result<()> {
        self.first_chain = start.first_chain;
        self.writer.sync()?;
        if start.steps_done == 0 {
            self.save(start)?;
        }
        Ok(())
    }

    fn on_draws(&mut self, draws: &[Draw]) -> Result<()> {
        for d in draws {
            self.writer.write(d.chain, d.index, &d.values)?;
        }
        self.writer.sync()
    }

    fn on_round(&mut self, checkpoint: &Checkpoint<S, C>) -> Result<()> {
        self.save(checkpoint)
    }

    fn on_thinned(&mut self, samples: &Samples) -> Result<()> {
        // Rewrite the draws file with what is kept (a new file renamed over
        // the old one), then append to it as before.
        let path = self.dir.join(SAMPLES_FILE);
        let tmp = self.dir.join(format!("{SAMPLES_FILE}.tmp"));
        let mut w = CsvDrawWriter::create(&tmp, &self.names)?;
        let n = samples
            .chains
            .iter()
            .map(|c| c.n_draws())
            .max()
            .unwrap_or(0);
        for i in 0..n {
            for (k, tr) in samples.chains.iter().enumerate() {
                if i < tr.n_draws() {
                    w.write(self.first_chain + k, i, tr.draw(i))?;
                }
            }
        }
        w.sync()?;
        let (len, hash) = (w.len(), w.hash());
        drop(w);
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(path.display(), e))?;
        self.writer = CsvDrawWriter::resume(&path, len, hash)?;
        Ok(())
    }
}

fn check_version(v: u32, path: &str) -> Result<()> {
    if !(OLDEST_CHECKPOINT_VERSION..=CHECKPOINT_VERSION).contains(&v) {
        return Err(Error::checkpoint(
            path,
            "version",
            format!(
                "checkpoint format version {v} is not supported (expected {OLDEST_CHECKPOINT_VERSION} to {CHECKPOINT_VERSION})"
            ),
        ));
    }
    Ok(())
}

/// The caller's data saved in `DIR/checkpoint.json` (to rebuild the run's
/// configuration before resuming it) and the steps done, after checking the
/// format version.
pub fn read_checkpoint_user(dir: impl AsRef<Path>) -> Result<(serde_json::Value, u64)> {
    let path = dir.as_ref().join(CHECKPOINT_FILE);
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&shown, e))?;
    let head: CheckpointHead = serde_json::from_str(&text)
        .map_err(|e| Error::checkpoint(&shown, "json", e.to_string()))?;
    check_version(head.version, &shown)?;
    Ok((head.user, head.steps_done))
}

/// Write JSON to `path` atomically: a temporary file beside it
/// (`<name>.tmp`), fsync, rename, fsync of the directory. On any failure
/// (a full disk) the temporary file is removed and the error names `path`.
pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = BufWriter::new(File::create(&tmp)?);
        serde_json::to_writer_pretty(&mut f, value).map_err(std::io::Error::other)?;
        f.write_all(b"\n")?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path.display(), format!("cannot write: {e}")));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value whose serialisation fails half-way, as a write does when the
    /// disk fills up (issue 15: the error named no file and
    /// `checkpoint.json.tmp` was left behind).
    struct FailsHalfWay;

    impl Serialize for FailsHalfWay {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            use serde::ser::{Error as _, SerializeMap};
            let mut m = s.serialize_map(None)?;
            m.serialize_entry("written", &vec![1.0; 1000])?;
            Err(S::Error::custom("No space left on device (os error 28)"))
        }
    }

    #[test]
    fn a_failed_write_names_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("langevin-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("checkpoint.json");
        std::fs::write(&path, "{\"before\": true}\n").unwrap();
        let err = write_json_atomic(&path, &FailsHalfWay)
            .unwrap_err()
            .to_string();
        assert!(err.contains("checkpoint.json"), "{err}");
        assert!(err.contains("No space left on device"), "{err}");
        assert!(!dir.join("checkpoint.json.tmp").exists());
        // The previous file is untouched.
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"before\": true}\n"
        );
        write_json_atomic(&path, &serde_json::json!({"after": 1})).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("after"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
