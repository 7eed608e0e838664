//! Time, injected: components never read the clock themselves. The trait
//! and the clocks are `ben_time`'s, named here too for callers that know
//! them as `ben_component::Clock`.

pub use ben_time::{Clock, ManualClock, SystemClock};
