//! Password checks, bounded. An argon2id check takes about 19 MiB for tens of milliseconds:
//! run one per blocking thread for every CONNECT that arrives, and 200 wrong passwords at once
//! took 4 GB, most of it kept by the allocator afterwards, while a valid login waited seconds.
//!
//! Here a check runs on one of a few threads of its own (`workers`, at most 4), so the memory
//! it uses is that many times 19 MiB at most, and stays with those threads. Each source address
//! (an IPv6 address by its /64) has one check at a time; the others from it wait in line
//! without costing a check, so an address flooding logins delays itself, not everyone. After
//! failures an address waits longer before each check (0.5 s after the third, doubling up to
//! 8 s, forgotten 15 minutes after the last failure): a slowdown, not a lockout — the right
//! password still gets in, later. A check that cannot start before the deadline (the connect
//! timeout) is refused with "server busy". Unknown users and wrong passwords look the same
//! (`Auth::check` spends the same argon2 work on both).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use kite_mqtt::codec::ReasonCode;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

use kite_policy::{Login, Refused};

/// Failures after which an address's checks are delayed.
const FREE_FAILURES: u32 = 3;
/// The first delay, doubled at each further failure up to `MAX_DELAY`.
const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(8);
/// Failures older than this are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered at most; beyond, idle ones are forgotten first.
const MAX_SOURCES: usize = 65_536;

type Job = Box<dyn FnOnce() + Send>;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct LoginStats {
    /// Logins refused (wrong password, unknown user, bad token, ...).
    pub failed: AtomicU64,
    /// Checks that waited because their address had failed before.
    pub delayed: AtomicU64,
    /// Logins refused because no check could start before the deadline.
    pub busy: AtomicU64,
}

#[derive(Debug)]
struct Source {
    /// One check at a time from this address.
    gate: Arc<Semaphore>,
    failures: u32,
    last_failure: Option<Instant>,
}

impl Source {
    fn idle(&self, now: Instant) -> bool {
        Arc::strong_count(&self.gate) == 1
            && self
                .last_failure
                .is_none_or(|t| now.duration_since(t) >= FORGET_AFTER)
    }
}

/// Where logins are checked: shared by the WebSocket sessions, the broker's devices and the
/// publish API (clones share it).
#[derive(Clone)]
pub struct Logins {
    inner: Arc<Inner>,
}

struct Inner {
    workers: usize,
    /// Checks running or queued for a worker at most: `workers`.
    slots: Semaphore,
    /// The workers' queue, started at the first check (threads end when this is dropped).
    pool: OnceLock<Mutex<mpsc::Sender<Job>>>,
    sources: Mutex<HashMap<IpAddr, Source>>,
    stats: LoginStats,
}

impl std::fmt::Debug for Logins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logins")
            .field("workers", &self.inner.workers)
            .finish_non_exhaustive()
    }
}

impl Default for Logins {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::new(cores.clamp(1, 4))
    }
}

/// An IPv4 address as it is; an IPv6 one by its /64 (one host usually has a whole /64).
pub fn source_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// The wait before a check from an address with `failures` recent failures.
fn delay_after(failures: u32) -> Duration {
    match failures.checked_sub(FREE_FAILURES) {
        None => Duration::ZERO,
        Some(n) => FIRST_DELAY.saturating_mul(1 << n.min(8)).min(MAX_DELAY),
    }
}

impl Logins {
    /// Checks run on `workers` threads (at least 1).
    pub fn new(workers: usize) -> Self {
        let workers = workers.max(1);
        Self {
            inner: Arc::new(Inner {
                workers,
                slots: Semaphore::new(workers),
                pool: OnceLock::new(),
                sources: Mutex::new(HashMap::new()),
                stats: LoginStats::default(),
            }),
        }
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> &LoginStats {
        &self.inner.stats
    }

    /// Checks a CONNECT's user name and password with `check` (e.g. [`kite_policy::Auth::check`])
    /// as [`Logins::check`] does; with the login, admit the CONNECT with
    /// [`kite_policy::Auth::admit`].
    pub async fn check_connect(
        &self,
        connect: &kite_mqtt::codec::Connect,
        peer: IpAddr,
        deadline: Duration,
        check: impl FnOnce(Option<&str>, Option<&[u8]>) -> Result<Login, Refused> + Send + 'static,
    ) -> Result<Login, Refused> {
        let username = connect.username.as_ref().map(ToString::to_string);
        let password = connect.password.clone();
        self.check(peer, deadline, move || {
            check(username.as_deref(), password.as_deref())
        })
        .await
    }

    /// Runs `check` (a password or token check) for a client at `peer`: in line behind that
    /// address's other checks, after the delay its failures earned, on a worker thread. A
    /// check that has not started within `deadline` is refused as "server busy".
    pub async fn check(
        &self,
        peer: IpAddr,
        deadline: Duration,
        check: impl FnOnce() -> Result<Login, Refused> + Send + 'static,
    ) -> Result<Login, Refused> {
        let source = source_of(peer);
        let gate = self.enter(source);
        let started = tokio::time::timeout(deadline, async {
            let in_line = gate.clone().acquire_owned().await;
            let delay = self.delay(source);
            if !delay.is_zero() {
                self.inner.stats.delayed.fetch_add(1, Relaxed);
                tokio::time::sleep(delay).await;
            }
            let slot = self.inner.slots.acquire().await;
            (in_line, slot)
        })
        .await;
        let Ok((Ok(in_line), Ok(slot))) = started else {
            drop(gate);
            self.inner.stats.busy.fetch_add(1, Relaxed);
            return Err(Refused::new(
                ReasonCode::ServerBusy,
                "too many logins are waiting; try again later",
            ));
        };
        let result = self.run(check).await;
        // Released before `record`, which forgets an address with nothing under way.
        drop((slot, in_line, gate));
        if result
            .as_ref()
            .is_err_and(|r| r.code != ReasonCode::ServerUnavailable)
        {
            self.inner.stats.failed.fetch_add(1, Relaxed);
        }
        self.record(source, result.is_ok());
        result
    }

    /// The address's gate, its entry made if needed (and idle entries forgotten when there
    /// are too many).
    fn enter(&self, source: IpAddr) -> Arc<Semaphore> {
        let mut sources = lock(&self.inner.sources);
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&source) {
            let now = Instant::now();
            sources.retain(|_, s| !s.idle(now));
            if sources.len() >= MAX_SOURCES {
                // Only addresses with checks under way or recent failures: keep the former.
                sources.retain(|_, s| Arc::strong_count(&s.gate) > 1);
            }
        }
        sources
            .entry(source)
            .or_insert_with(|| Source {
                gate: Arc::new(Semaphore::new(1)),
                failures: 0,
                last_failure: None,
            })
            .gate
            .clone()
    }

    fn delay(&self, source: IpAddr) -> Duration {
        let sources = lock(&self.inner.sources);
        match sources.get(&source) {
            Some(s) if s.last_failure.is_some_and(|t| t.elapsed() < FORGET_AFTER) => {
                delay_after(s.failures)
            }
            _ => Duration::ZERO,
        }
    }

    fn record(&self, source: IpAddr, ok: bool) {
        let mut sources = lock(&self.inner.sources);
        let Some(s) = sources.get_mut(&source) else {
            return;
        };
        if ok {
            s.failures = 0;
            s.last_failure = None;
        } else {
            let stale = s.last_failure.is_some_and(|t| t.elapsed() >= FORGET_AFTER);
            s.failures = if stale {
                1
            } else {
                s.failures.saturating_add(1)
            };
            s.last_failure = Some(Instant::now());
        }
        if s.idle(Instant::now()) {
            sources.remove(&source);
        }
    }

    /// Runs `check` on a worker thread (started at the first check).
    async fn run(
        &self,
        check: impl FnOnce() -> Result<Login, Refused> + Send + 'static,
    ) -> Result<Login, Refused> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(check());
        });
        let sent = lock(self.pool()).send(job).is_ok();
        let failed = || {
            Refused::new(
                ReasonCode::ServerUnavailable,
                "authentication failed to run",
            )
        };
        if !sent {
            return Err(failed());
        }
        rx.await.unwrap_or_else(|_| Err(failed()))
    }

    fn pool(&self) -> &Mutex<mpsc::Sender<Job>> {
        self.inner.pool.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..self.inner.workers {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("kite-login-{i}"))
                    .spawn(move || {
                        loop {
                            // The queue ends when the last `Logins` is dropped.
                            let Ok(job) = lock(&rx).recv() else {
                                return;
                            };
                            job();
                        }
                    });
                if let Err(e) = spawned {
                    tracing::error!("a login worker thread could not start: {e}");
                }
            }
            Mutex::new(tx)
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Result<Login, Refused> {
        Err(Refused::new(ReasonCode::BadUserNameOrPassword, "wrong"))
    }

    fn ok() -> Result<Login, Refused> {
        Ok(Login {
            user: "u".into(),
            role: None,
        })
    }

    #[test]
    fn delays_grow_after_the_free_failures_and_stop_at_the_cap() {
        let d: Vec<u64> = (0..10).map(|n| delay_after(n).as_millis() as u64).collect();
        assert_eq!(d, [0, 0, 0, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(delay_after(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_of(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    /// Failures from one address slow that address down (paused time: the delays are
    /// measured, not slept); a success resets it; another address is not delayed.
    #[tokio::test(start_paused = true)]
    async fn failures_slow_down_their_own_address_only() {
        let logins = Logins::new(1);
        let bad: IpAddr = "192.0.2.1".parse().unwrap();
        let good: IpAddr = "192.0.2.2".parse().unwrap();
        let long = Duration::from_secs(60);
        for _ in 0..5 {
            assert!(logins.check(bad, long, refused).await.is_err());
        }
        let t = Instant::now();
        assert!(logins.check(good, long, ok).await.is_ok());
        assert!(t.elapsed() < Duration::from_millis(100));
        let t = Instant::now();
        assert!(logins.check(bad, long, ok).await.is_ok());
        assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
        // Reset by the success.
        let t = Instant::now();
        assert!(logins.check(bad, long, refused).await.is_err());
        assert!(t.elapsed() < Duration::from_millis(100));
        assert_eq!(logins.stats().failed.load(Relaxed), 6);
        assert_eq!(logins.stats().delayed.load(Relaxed), 3);
    }

    /// A check that cannot start before the deadline is refused as busy, and counted.
    #[tokio::test(start_paused = true)]
    async fn a_check_waiting_past_its_deadline_is_refused_busy() {
        let logins = Logins::new(1);
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..6 {
            let _ = logins.check(peer, Duration::from_secs(60), refused).await;
        }
        // The next check from it waits 4 s first: past a 1 s deadline.
        let r = logins.check(peer, Duration::from_secs(1), ok).await;
        assert_eq!(r.map_err(|e| e.code), Err(ReasonCode::ServerBusy));
        assert_eq!(logins.stats().busy.load(Relaxed), 1);
    }
}
