//! Where the model file is: the same answer from any working directory.
//!
//! In order: an explicit path (`--model`), the environment variable
//! [`MODEL_ENV`], the user's cache folder (`$XDG_CACHE_HOME/langevin/models`,
//! else `~/.cache/langevin/models`; where `scripts/fetch-smollm2.sh` puts the
//! model), then the `.cache/models` folder of the repository this crate was
//! built from. An explicit path or a set variable that names no file is an
//! error of its own (never silently replaced by another model).

use std::path::{Path, PathBuf};

use crate::error::{EmtError, Result};

/// The file name of the default model (SmolLM2-135M-Instruct, Q4_1 GGUF).
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The environment variable naming a model file.
pub const MODEL_ENV: &str = "LANGEVIN_EMT_MODEL";

/// How to get the model, for messages.
pub const FETCH_HINT: &str = "fetch it with scripts/fetch-smollm2.sh from the langevin repository \
     (it puts the model in the user cache folder), or pass --model FILE";

/// The user cache folder for models: `$XDG_CACHE_HOME/langevin/models` when
/// that variable is an absolute path, else `$HOME/.cache/langevin/models`;
/// `None` without either.
pub fn user_model_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = xdg.or_else(|| {
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".cache"))
    })?;
    Some(base.join("langevin").join("models"))
}

/// The repository's `.cache/models` (of the source tree this crate was built from).
pub fn repo_model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(".cache/models")
}

/// The places looked at, in order, with what each one is.
pub fn model_candidates(explicit: Option<&Path>) -> Vec<(&'static str, PathBuf)> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push(("--model", p.to_path_buf()));
        return out;
    }
    if let Some(p) = std::env::var_os(MODEL_ENV).filter(|v| !v.is_empty()) {
        out.push((MODEL_ENV, PathBuf::from(p)));
        return out;
    }
    if let Some(d) = user_model_dir() {
        out.push(("the user cache folder", d.join(MODEL_FILE)));
    }
    out.push((
        "the repository's .cache/models",
        repo_model_dir().join(MODEL_FILE),
    ));
    out
}

/// The model file to load (see the module docs for the order), or
/// [`EmtError::ModelNotFound`] listing every place looked.
pub fn find_model(explicit: Option<&Path>) -> Result<PathBuf> {
    let candidates = model_candidates(explicit);
    if let Some((_, p)) = candidates.iter().find(|(_, p)| p.is_file()) {
        return Ok(p.clone());
    }
    let looked = candidates
        .iter()
        .map(|(what, p)| format!("{} ({what})", p.display()))
        .collect::<Vec<_>>()
        .join(", ");
    Err(EmtError::ModelNotFound {
        path: candidates
            .first()
            .map(|(_, p)| p.clone())
            .unwrap_or_default(),
        looked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_path_is_the_only_candidate_and_its_absence_is_named() {
        let missing = Path::new("/nonexistent/m.gguf");
        let c = model_candidates(Some(missing));
        assert_eq!(c.len(), 1);
        let e = find_model(Some(missing)).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/m.gguf (--model)"), "{e}");
        assert!(e.contains("scripts/fetch-smollm2.sh"), "{e}");
        let dir = std::env::temp_dir().join(format!("langevin-locate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.gguf");
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(find_model(Some(&f)).unwrap(), f);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_repository_folder_is_absolute_to_the_source_tree() {
        let d = repo_model_dir();
        // The folder itself need not exist (a fresh clone has no .cache).
        assert!(d.is_absolute());
        assert!(d.ends_with(".cache/models"));
        assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../Cargo.toml")
            .is_file());
    }
}
