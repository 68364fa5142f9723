//! ekf (being built)
