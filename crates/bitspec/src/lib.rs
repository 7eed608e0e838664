//! Bitspec (being written).
