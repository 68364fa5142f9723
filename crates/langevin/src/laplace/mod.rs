//! laplace (being built)
