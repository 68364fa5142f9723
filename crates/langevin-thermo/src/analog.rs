//! analog (in progress)
