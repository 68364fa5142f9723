//! ou (in progress)
