//! How a component process asks Linux for CPU time.
//!
//! On a machine with fewer cores than processes, a record's latency is
//! mostly time spent waiting for a core: measured on 2 cores at 50k
//! records/s, a spine woken for a probe record waited up to 3.7 ms while
//! Lucius, which had just been handed 475 records to store, kept the core
//! until the scheduler tick. Lucius is the one component whose work can
//! wait (its queue absorbs it; what overflows is counted), so
//! [`CpuClass::Background`] runs it under `SCHED_IDLE`: it gets every cycle
//! the data path leaves and none it needs. The cost is explicit: on a
//! machine saturated for long, Lucius falls behind and drops what its
//! queue cannot hold (counted, in `lucius … dropped`).
//!
//! The policy is set on the calling thread before the process starts any
//! other; threads created later (tokio's blocking pool, sqlx's SQLite
//! thread) inherit it.

/// A process's scheduling class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuClass {
    /// The kernel's default (`SCHED_OTHER`, nice unchanged).
    #[default]
    Normal,
    /// `SCHED_IDLE`: runs only when nothing else wants the core.
    Background,
}

impl CpuClass {
    /// Applies the class to the calling thread (and the threads it
    /// creates later). `Err` says why the kernel refused; the process can
    /// run on without it.
    pub fn apply(self) -> Result<(), String> {
        let policy = match self {
            CpuClass::Normal => return Ok(()),
            CpuClass::Background => libc::SCHED_IDLE,
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler(2) reads `param`, a valid, initialised
        // struct that outlives the call; pid 0 is the calling thread.
        let r = unsafe { libc::sched_setscheduler(0, policy, &param) };
        if r != 0 {
            return Err(format!(
                "setting the CPU scheduling class {self:?}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs on its own thread so the test binary's other threads keep
    /// their class; a thread it starts inherits the class.
    #[test]
    fn background_is_sched_idle_and_inherited() {
        std::thread::spawn(|| {
            CpuClass::Background.apply().unwrap();
            // SAFETY: sched_getscheduler(2) on the calling thread.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_IDLE);
            let child = std::thread::spawn(|| unsafe { libc::sched_getscheduler(0) });
            assert_eq!(child.join().unwrap(), libc::SCHED_IDLE);
        })
        .join()
        .unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
    }
}
