//! One module per measurement. Each returns plain numbers; `main` turns them into the table.

pub mod fleet;
pub mod idle;
pub mod lifetime;
pub mod many;
pub mod rotations;
pub mod size;
pub mod startup;
