//! Bundles (being written).
