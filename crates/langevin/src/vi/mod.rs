//! vi (being built)
