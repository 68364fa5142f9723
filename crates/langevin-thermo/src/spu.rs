//! spu (in progress)
