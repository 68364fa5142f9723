//! langevin-models
