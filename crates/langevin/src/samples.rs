//! samples (being built)
