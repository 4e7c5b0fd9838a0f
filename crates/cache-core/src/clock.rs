//! Time, injectable: the system clock, and a manual clock for tests.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

/// A boxed, `Send` future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of time, monotonic and wall-clock, that can also sleep.
///
/// # Behavior
///
/// - `now()` never goes backwards.
/// - `sleep_until(d)` completes once `now() >= d` (at once if it already is).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic time.
    fn now(&self) -> Instant;
    /// Wall-clock time (for records and events).
    fn system_time(&self) -> SystemTime;
    /// A future that completes once `now() >= deadline`.
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()>;
    /// Whether this clock follows real time (true for [`SystemClock`]). Backends may
    /// delegate expiry to a library's own timer only when it does.
    fn follows_real_time(&self) -> bool {
        true
    }
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clocks and tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// The system clock as a [`SharedClock`].
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn system_time(&self) -> SystemTime {
        SystemTime::now()
    }
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}

/// A clock that moves only when told to.
///
/// # Behavior
///
/// - Starts at the real time of its creation and stays there until
///   [`ManualClock::advance`] moves it; both clocks move together.
/// - Sleepers wake as soon as an `advance` reaches their deadline.
/// - Clones share one time.
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

struct ManualInner {
    base: Instant,
    base_system: SystemTime,
    offset: watch::Sender<Duration>,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("elapsed", &*self.inner.offset.borrow())
            .finish()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl ManualClock {
    /// A clock at the current real time.
    pub fn new() -> Self {
        let (offset, _) = watch::channel(Duration::ZERO);
        ManualClock {
            inner: Arc::new(ManualInner {
                base: Instant::now(),
                base_system: SystemTime::now(),
                offset,
            }),
        }
    }

    /// Moves time forward by `by`, waking every sleeper whose deadline is reached.
    pub fn advance(&self, by: Duration) {
        self.inner.offset.send_modify(|o| *o += by);
    }

    /// How far the clock has been advanced in total.
    pub fn elapsed(&self) -> Duration {
        *self.inner.offset.borrow()
    }

    /// This clock as a [`SharedClock`].
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.inner.base + *self.inner.offset.borrow()
    }
    fn system_time(&self) -> SystemTime {
        self.inner.base_system + *self.inner.offset.borrow()
    }
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let mut rx = inner.offset.subscribe();
            loop {
                if inner.base + *rx.borrow_and_update() >= deadline {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    }
    fn follows_real_time(&self) -> bool {
        false
    }
}

/// The instant `d` after `now`; a `d` past what an `Instant` can hold (a configured
/// `Duration::MAX`) is 30 years, as tokio's timers read it: never an overflow.
pub fn later(now: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);
    now.checked_add(d).or_else(|| now.checked_add(FAR)).unwrap_or(now)
}

/// Runs `fut` with a deadline measured on `clock`: `None` when the deadline passed first.
pub async fn with_deadline<T>(clock: &dyn Clock, after: Duration, fut: impl Future<Output = T>) -> Option<T> {
    let sleep = clock.sleep_until(later(clock.now(), after));
    tokio::select! {
        biased;
        v = fut => Some(v),
        () = sleep => None,
    }
}
