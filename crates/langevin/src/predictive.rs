//! predictive (being built)
