//! TODO(owner: helper)
