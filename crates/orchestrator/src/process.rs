//! # The local process backend
//!
//! Keeps OS processes running, one per component (`ben cluster up` starts
//! `ben run <component>` children through it). Each child is watched by its
//! own task: when it exits — a crash, `kill -9`, a clean exit — the exit is
//! reported, counted in [`Restarts`] and the child is started again after
//! the [`Backoff`] policy's wait. Stopping sends SIGTERM to the children
//! kind by kind in reverse start order (sidecars first, so nothing is sent
//! into a hop that is already gone; the control plane last), waits up to a
//! grace period for each kind, then SIGKILLs what is left.
//!
//! Children run in their own process groups (a terminal's Ctrl-C reaches
//! the supervisor, which stops them in order) and get `PR_SET_PDEATHSIG =
//! SIGKILL`: if the supervisor itself is killed they die with it rather
//! than run on unsupervised.

use crate::{Backoff, BackoffState, Restarts};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How to start one component process.
#[derive(Debug, Clone)]
pub struct ProcSpec {
    /// Unique name, e.g. `spine-2`.
    pub name: String,
    /// Kind (role), e.g. `spine`.
    pub kind: String,
    /// Start order: lower starts first and stops last.
    pub order: u8,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Something the supervisor wants told (the caller prints or logs it).
pub type Report = Arc<dyn Fn(String) + Send + Sync>;

/// What the supervisor knows about one child.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildState {
    pub kind: String,
    /// The running incarnation's pid (`None` while waiting to restart).
    pub pid: Option<u32>,
    /// 1 for the first start, +1 per restart.
    pub incarnation: u64,
    /// How the previous incarnation ended.
    pub last_exit: Option<String>,
    /// When the running incarnation started.
    pub running_since: Option<std::time::Instant>,
}

struct Child {
    spec: ProcSpec,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Supervises component processes.
pub struct Supervisor {
    policy: Backoff,
    grace: Duration,
    restarts: Arc<Restarts>,
    report: Report,
    states: Arc<Mutex<BTreeMap<String, ChildState>>>,
    children: Vec<Child>,
}

impl Supervisor {
    /// `grace`: how long a child has to exit after SIGTERM before SIGKILL.
    pub fn new(policy: Backoff, grace: Duration, restarts: Arc<Restarts>, report: Report) -> Self {
        Supervisor {
            policy,
            grace,
            restarts,
            report,
            states: Arc::default(),
            children: Vec::new(),
        }
    }

    pub fn restarts(&self) -> Arc<Restarts> {
        self.restarts.clone()
    }

    /// A snapshot of every child's state.
    pub fn states(&self) -> BTreeMap<String, ChildState> {
        self.states.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// SIGKILLs the running incarnation of `name` (it is then restarted
    /// like any crashed child). Returns whether there was one.
    pub fn kill(&self, name: &str) -> bool {
        let pid = self
            .states
            .lock()
            .ok()
            .and_then(|s| s.get(name).and_then(|c| c.pid));
        if let Some(pid) = pid {
            signal(pid, libc::SIGKILL);
        }
        pid.is_some()
    }

    /// Starts `spec` and keeps it running until [`Supervisor::stop`].
    /// Returns the first incarnation's pid, or why it could not start (the
    /// supervisor keeps retrying with backoff either way).
    pub async fn start(&mut self, spec: ProcSpec) -> Result<u32, String> {
        self.launch(spec)?.await
    }

    /// [`Supervisor::start`] without waiting for the first incarnation:
    /// the returned future resolves with its pid (or why it could not
    /// start). `Err` at once if `spec`'s name is already supervised.
    pub fn launch(
        &mut self,
        spec: ProcSpec,
    ) -> Result<impl Future<Output = Result<u32, String>> + Send + 'static, String> {
        if self.children.iter().any(|c| c.spec.name == spec.name) {
            return Err(format!("{} is already supervised", spec.name));
        }
        let (stop, stop_rx) = watch::channel(false);
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        if let Ok(mut s) = self.states.lock() {
            s.insert(
                spec.name.clone(),
                ChildState {
                    kind: spec.kind.clone(),
                    ..ChildState::default()
                },
            );
        }
        let task = tokio::spawn(keep_running(
            spec.clone(),
            self.policy,
            self.grace,
            stop_rx,
            self.restarts.clone(),
            self.states.clone(),
            self.report.clone(),
            first_tx,
        ));
        self.children.push(Child { spec, stop, task });
        Ok(async move {
            first_rx
                .await
                .unwrap_or_else(|_| Err("the supervising task ended".into()))
        })
    }

    /// Stops one child for good (scaling down): SIGTERM, up to the grace
    /// period, then SIGKILL; it is not restarted and leaves [`states`].
    /// Returns how its last incarnation ended, or `None` if `name` is not
    /// supervised.
    ///
    /// [`states`]: Supervisor::states
    pub async fn stop_one(&mut self, name: &str) -> Option<String> {
        Some(self.begin_stop(name)?.await)
    }

    /// [`Supervisor::stop_one`] without waiting: SIGTERM goes out now (the
    /// child no longer counts as supervised); the returned future resolves
    /// with how it ended once it has exited. Lets a caller that keeps the
    /// supervisor behind a lock release it while the child stops.
    pub fn begin_stop(
        &mut self,
        name: &str,
    ) -> Option<impl Future<Output = String> + Send + 'static> {
        let i = self.children.iter().position(|c| c.spec.name == name)?;
        let c = self.children.remove(i);
        let _ = c.stop.send(true);
        let states = self.states.clone();
        let name = name.to_string();
        Some(async move {
            let _ = c.task.await;
            states
                .lock()
                .ok()
                .and_then(|mut s| s.remove(&name))
                .and_then(|st| st.last_exit)
                .unwrap_or_else(|| "stopped".into())
        })
    }

    /// Stops every child: SIGTERM kind by kind in reverse start order, each
    /// kind given `grace` before SIGKILL. Returns once all have exited.
    pub async fn stop(mut self) {
        self.children
            .sort_by_key(|c| std::cmp::Reverse(c.spec.order));
        let mut groups: Vec<Vec<Child>> = Vec::new();
        for c in self.children.drain(..) {
            match groups.last_mut() {
                Some(g) if g[0].spec.order == c.spec.order => g.push(c),
                _ => groups.push(vec![c]),
            }
        }
        for g in groups {
            for c in &g {
                let _ = c.stop.send(true);
            }
            for c in g {
                let _ = c.task.await;
            }
        }
    }
}

/// Resolves once a stop is requested (or the supervisor is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is
        // one of our children that has not been reaped yet.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "exited".into(),
        },
        Err(e) => format!("could not be waited for: {e}"),
    }
}

fn spawn(spec: &ProcSpec) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().cloned())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls setpgid(2) and prctl(2), which are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            // Its own process group: a terminal's Ctrl-C reaches the
            // supervisor only, which then stops the children in order.
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

#[allow(clippy::too_many_arguments)]
async fn keep_running(
    spec: ProcSpec,
    policy: Backoff,
    grace: Duration,
    mut stop: watch::Receiver<bool>,
    restarts: Arc<Restarts>,
    states: Arc<Mutex<BTreeMap<String, ChildState>>>,
    report: Report,
    first: tokio::sync::oneshot::Sender<Result<u32, String>>,
) {
    let mut first = Some(first);
    let mut backoff = BackoffState::new(policy);
    let set = |f: &dyn Fn(&mut ChildState)| {
        if let Ok(mut s) = states.lock() {
            if let Some(c) = s.get_mut(&spec.name) {
                f(c);
            }
        }
    };
    loop {
        let started = tokio::time::Instant::now();
        let why = match spawn(&spec) {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                set(&|c| {
                    c.pid = Some(pid);
                    c.incarnation += 1;
                    c.running_since = Some(std::time::Instant::now());
                });
                if let Some(f) = first.take() {
                    let _ = f.send(Ok(pid));
                }
                tokio::select! {
                    status = child.wait() => describe(status),
                    _ = stopped(&mut stop) => {
                        signal(pid, libc::SIGTERM);
                        let status = match tokio::time::timeout(grace, child.wait()).await {
                            Ok(s) => describe(s),
                            Err(_) => {
                                let _ = child.start_kill();
                                format!("{} (SIGKILL after {grace:?})", describe(child.wait().await))
                            }
                        };
                        set(&|c| {
                            c.pid = None;
                            c.running_since = None;
                            c.last_exit = Some(status.clone());
                        });
                        report(format!("{} ({}) stopped: {status}", spec.name, spec.kind));
                        return;
                    }
                }
            }
            Err(e) => {
                let why = format!("could not be started ({}): {e}", spec.program.display());
                if let Some(f) = first.take() {
                    let _ = f.send(Err(why.clone()));
                }
                why
            }
        };
        set(&|c| {
            c.pid = None;
            c.running_since = None;
            c.last_exit = Some(why.clone());
        });
        if *stop.borrow() {
            return;
        }
        let wait = backoff.after_exit(started.elapsed());
        restarts.record(&spec.name);
        report(format!(
            "{} ({}) {why} after {:.1} s; restarting in {wait:?}",
            spec.name,
            spec.kind,
            started.elapsed().as_secs_f64()
        ));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn sh(name: &str, kind: &str, script: &str) -> ProcSpec {
        ProcSpec {
            name: name.into(),
            kind: kind.into(),
            order: if kind == "control" { 0 } else { 2 },
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![],
        }
    }

    #[tokio::test]
    async fn killed_child_is_restarted_and_stop_terminates_all() {
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let l2 = log.clone();
        let mut sup = Supervisor::new(
            Backoff {
                initial: Duration::from_millis(50),
                ..Backoff::default()
            },
            Duration::from_secs(2),
            Arc::default(),
            Arc::new(move |m| l2.lock().unwrap().push(m)),
        );
        let spine = sup
            .start(sh("spine-1", "spine", "exec sleep 30"))
            .await
            .unwrap();
        sup.start(sh("control", "control", "exec sleep 30"))
            .await
            .unwrap();
        assert!(sup.start(sh("spine-1", "spine", "true")).await.is_err());
        assert!(sup.kill("spine-1"));
        assert!(!sup.kill("nobody"));
        let mut restarted = None;
        for _ in 0..100 {
            let st = sup.states();
            if st["spine-1"].incarnation == 2 && st["spine-1"].pid.is_some() {
                restarted = st["spine-1"].pid;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let restarted = restarted.expect("spine-1 restarted");
        assert_ne!(restarted, spine);
        assert_eq!(sup.restarts().of("spine-1"), 1);
        assert_eq!(sup.restarts().total.load(Ordering::Relaxed), 1);
        let st = sup.states();
        assert_eq!(
            st["spine-1"].last_exit.as_deref(),
            Some("killed by signal 9")
        );
        let control = st["control"].pid.unwrap();
        sup.stop().await;
        let log = log.lock().unwrap().clone();
        // Reverse start order: the spine stops before the control plane.
        let stopped: Vec<&String> = log.iter().filter(|l| l.contains("stopped")).collect();
        assert_eq!(stopped.len(), 2, "{log:?}");
        assert!(stopped[0].starts_with("spine-1"), "{log:?}");
        assert!(stopped[1].contains("killed by signal 15"), "{log:?}");
        // Both are gone (kill(pid, 0) fails for a reaped pid).
        for pid in [restarted, control] {
            let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
            assert!(!alive, "pid {pid} still running");
        }
    }

    #[tokio::test]
    async fn stop_one_terminates_that_child_only_and_forgets_it() {
        let mut sup = Supervisor::new(
            Backoff::default(),
            Duration::from_secs(2),
            Arc::default(),
            Arc::new(|_| {}),
        );
        sup.start(sh("spine-1", "spine", "exec sleep 30"))
            .await
            .unwrap();
        let spare = sup
            .start(sh("spine-3", "spine", "exec sleep 30"))
            .await
            .unwrap();
        let how = sup.stop_one("spine-3").await;
        assert_eq!(how.as_deref(), Some("killed by signal 15"));
        assert!(sup.stop_one("spine-3").await.is_none());
        let st = sup.states();
        assert!(!st.contains_key("spine-3"), "{st:?}");
        assert!(st["spine-1"].pid.is_some());
        assert_eq!(sup.restarts().total.load(Ordering::Relaxed), 0);
        let alive = unsafe { libc::kill(spare as libc::pid_t, 0) } == 0;
        assert!(!alive, "pid {spare} still running");
        // The id can be started again later.
        sup.start(sh("spine-3", "spine", "exec sleep 30"))
            .await
            .unwrap();
        sup.stop().await;
    }

    #[tokio::test]
    async fn a_child_that_ignores_sigterm_is_killed_after_the_grace() {
        let mut sup = Supervisor::new(
            Backoff::default(),
            Duration::from_millis(300),
            Arc::default(),
            Arc::new(|_| {}),
        );
        sup.start(sh(
            "stubborn",
            "spine",
            "trap '' TERM; while :; do sleep 0.1; done",
        ))
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let states = sup.states.clone();
        let t0 = std::time::Instant::now();
        sup.stop().await;
        assert!(t0.elapsed() < Duration::from_secs(5));
        let st = states.lock().unwrap()["stubborn"].clone();
        assert!(
            st.last_exit.as_deref().unwrap_or("").contains("SIGKILL"),
            "{st:?}"
        );
    }

    #[tokio::test]
    async fn a_program_that_does_not_exist_is_reported() {
        let mut sup = Supervisor::new(
            Backoff::default(),
            Duration::from_millis(300),
            Arc::default(),
            Arc::new(|_| {}),
        );
        let mut spec = sh("x", "proxy", "");
        spec.program = "/nonexistent/ben".into();
        let e = sup.start(spec).await.unwrap_err();
        assert!(e.contains("/nonexistent/ben"), "{e}");
        sup.stop().await;
    }
}
