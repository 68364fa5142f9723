//! Exit codes and the error kinds that choose them.
//!
//! * 0: success
//! * 1: internal error (anything not classified below)
//! * 2: bad input (bad data, bad arguments, bad files): wrap the error in [`BadInput`]
//! * 3: the run stopped on too many divergences, with everything collected so far saved: [`Diverged`]
//! * 4: `fit --require-converged` and the run ended without a converged verdict (everything written): [`NotConverged`]

use std::fmt;

/// Marks an error as the user's input being wrong (exit code 2).
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// A run that stopped cleanly on divergences (exit code 3).
#[derive(Debug)]
pub struct Diverged(pub String);

impl fmt::Display for Diverged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Diverged {}

/// A finished run without a converged verdict under `--require-converged` (exit code 4).
#[derive(Debug)]
pub struct NotConverged(pub String);

impl fmt::Display for NotConverged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotConverged {}

/// Shorthand: `bail_input!("...")` returns a [`BadInput`] error.
#[macro_export]
macro_rules! bail_input {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::exit::BadInput(format!($($arg)*))))
    };
}

/// Wrap any error as bad input, keeping its message.
pub fn bad_input<E: fmt::Display>(e: E) -> anyhow::Error {
    anyhow::Error::new(BadInput(e.to_string()))
}

/// The exit code for an error.
pub fn code_for(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.downcast_ref::<BadInput>().is_some() {
            return 2;
        }
        if cause.downcast_ref::<Diverged>().is_some() {
            return 3;
        }
        if cause.downcast_ref::<NotConverged>().is_some() {
            return 4;
        }
        if let Some(e) = cause.downcast_ref::<langevin_models::ModelError>() {
            return if e.is_bad_input() { 2 } else { 1 };
        }
        if let Some(e) = cause.downcast_ref::<langevin_core::Error>() {
            return if e.is_bad_input() { 2 } else { 1 };
        }
    }
    1
}
