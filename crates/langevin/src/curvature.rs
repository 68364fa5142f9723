//! curvature (being built)
