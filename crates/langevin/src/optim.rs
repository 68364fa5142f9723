//! optim (being built)
