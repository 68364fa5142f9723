//! tngd (in progress)
