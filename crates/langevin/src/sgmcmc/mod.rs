pub mod sghmc;
