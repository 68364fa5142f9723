//! langevin-emt
