//! ensemble (being built)
