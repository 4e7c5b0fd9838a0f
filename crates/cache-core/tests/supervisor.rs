//! The health supervisor, driven by a scripted probe and the manual clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_cache_core::supervisor::SupervisorConfig;
use palisade_cache_core::{
    BoxFuture, Component, Endpoint, Error, Event, EventKind, Events, Health, ManualClock, Mode, OnRecover, Probe,
    RecoveryContext, Supervisor, SupervisorContext,
};
use tokio::sync::{broadcast, mpsc};
use tokio::time::timeout;

/// What one scripted probe call does.
#[derive(Clone, Copy, Debug)]
enum Step {
    Ok,
    Fail,
    /// Never answers: only the probe deadline ends it.
    Hang,
}

/// A probe that follows a script (then keeps failing) and reports each call.
struct Scripted {
    script: Mutex<VecDeque<Step>>,
    /// Each call's step and the manual time at which the probe was called.
    calls: mpsc::UnboundedSender<(Step, Duration)>,
    clock: ManualClock,
    _token: Arc<()>,
}

fn unavailable() -> Error {
    Error::Unavailable {
        backend: Endpoint::url("redis://127.0.0.1:1"),
        op: "test.op",
        source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
    }
}

impl Probe for Scripted {
    fn probe(&self) -> BoxFuture<'_, Result<(), Error>> {
        let step = self.script.lock().unwrap().pop_front().unwrap_or(Step::Fail);
        let _ = self.calls.send((step, self.clock.elapsed()));
        Box::pin(async move {
            match step {
                Step::Ok => Ok(()),
                Step::Fail => Err(unavailable()),
                Step::Hang => std::future::pending().await,
            }
        })
    }
}

struct Dropped(u64);
impl OnRecover for Dropped {
    fn on_recover<'a>(&'a self, _: &'a RecoveryContext) -> BoxFuture<'a, Result<u64, Error>> {
        Box::pin(async move { Ok(self.0) })
    }
}

struct Harness {
    clock: ManualClock,
    sup: Arc<Supervisor>,
    events: broadcast::Receiver<Event>,
    calls: mpsc::UnboundedReceiver<(Step, Duration)>,
    /// The manual time of the last probe call seen by `next_probe`.
    last_probe_at: Duration,
    token: Arc<()>,
}

fn config() -> SupervisorConfig {
    SupervisorConfig::default()
        .with_backoff_min(Duration::from_millis(100))
        .with_probe_period(Duration::from_secs(1))
        .with_probe_deadline(Duration::from_millis(250))
        .with_jitter(0.2)
}

fn harness(mode: Mode, script: &[Step], hook: Option<u64>, start_down: bool) -> Harness {
    let clock = ManualClock::new();
    let events = Events::new(64);
    let rx = events.subscribe();
    let (tx, calls) = mpsc::unbounded_channel();
    let token = Arc::new(());
    let probe = Scripted {
        script: Mutex::new(script.iter().copied().collect()),
        calls: tx,
        clock: clock.clone(),
        _token: Arc::clone(&token),
    };
    let ctx = SupervisorContext::new(Component::Cache, mode, events)
        .with_clock(clock.shared())
        .with_config(config());
    let hook = hook.map(|n| Box::new(Dropped(n)) as Box<dyn OnRecover>);
    let sup = if start_down {
        Supervisor::start_down(ctx, probe, hook, &unavailable()).unwrap()
    } else {
        Supervisor::new(ctx, probe, hook).unwrap()
    };
    Harness {
        clock,
        sup: Arc::new(sup),
        events: rx,
        calls,
        last_probe_at: Duration::ZERO,
        token,
    }
}

const REAL_DEADLINE: Duration = Duration::from_secs(10);

impl Harness {
    /// Moves the manual clock forward until the probe task makes its next call; returns
    /// what that call did. Polls with a real-time deadline.
    async fn next_probe(&mut self) -> Step {
        let give_up = tokio::time::Instant::now() + REAL_DEADLINE;
        loop {
            if let Ok(Some((step, at))) = timeout(Duration::from_millis(5), self.calls.recv()).await {
                self.last_probe_at = at;
                return step;
            }
            assert!(tokio::time::Instant::now() < give_up, "the probe was never called");
            self.clock.advance(Duration::from_millis(50));
        }
    }

    /// The next event, within a real-time deadline.
    async fn next_event(&mut self) -> Event {
        timeout(REAL_DEADLINE, self.events.recv())
            .await
            .expect("an event")
            .expect("not lagged")
    }

    fn no_event(&mut self) {
        match self.events.try_recv() {
            Err(broadcast::error::TryRecvError::Empty) => {}
            other => panic!("expected no event, got {other:?}"),
        }
    }

    /// Advances past any probe deadline, so that a hanging probe times out, and waits
    /// until the task calls the probe again.
    async fn fail_through(&mut self, expected: Step) {
        let step = self.next_probe().await;
        assert!(
            matches!((step, expected), (Step::Fail, Step::Fail) | (Step::Hang, Step::Hang)),
            "{step:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_failures_gives_exactly_one_degraded_event() {
    let mut h = harness(Mode::ExplicitDegraded, &[], None, false);
    assert_eq!(h.sup.health(), Health::Healthy);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let sup = Arc::clone(&h.sup);
            let tenant: Arc<str> = Arc::from("tenant-a");
            tokio::spawn(async move {
                palisade_cache_core::on_behalf_of(&tenant, async { sup.report("cache.get", &unavailable()) }).await
            })
        })
        .collect();
    let mut started = 0;
    for t in tasks {
        started += usize::from(t.await.unwrap());
    }
    assert_eq!(started, 1, "exactly one report starts the outage");
    let e = h.next_event().await;
    assert_eq!(e.kind, EventKind::Degraded);
    assert_eq!(e.component, Component::Cache);
    assert_eq!(e.mode, Mode::ExplicitDegraded);
    assert_eq!(
        e.tenant.as_deref(),
        Some("tenant-a"),
        "the event names the tenant whose call found the outage"
    );
    assert_eq!(
        e.error.as_ref().unwrap().kind,
        palisade_cache_core::ErrorKind::Unavailable
    );
    assert!(matches!(h.sup.health(), Health::Down { .. }));
    assert!(!h.sup.is_healthy());
    assert_eq!(h.sup.outage_number(), 1);
    // More failures during the same outage: still nothing.
    for _ in 0..10 {
        assert!(!h.sup.report("cache.set", &unavailable()));
    }
    h.no_event();
}

#[tokio::test]
async fn errors_that_are_not_outages_change_nothing() {
    let mut h = harness(Mode::ExplicitDegraded, &[], None, false);
    for e in [
        Error::codec("v", std::io::Error::other("bad")),
        Error::invalid_input("x"),
        Error::config("x"),
        Error::conflict("x"),
        Error::Backend {
            backend: Endpoint::named("redis"),
            op: "x",
            source: Box::new(std::io::Error::other("WRONGTYPE")),
        },
    ] {
        assert!(!h.sup.report("cache.get", &e));
    }
    assert!(h.sup.is_healthy());
    h.no_event();
    assert_eq!(h.sup.outage_number(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_probe_gives_no_recovered_until_a_probe_succeeds() {
    let script = [Step::Fail, Step::Hang, Step::Fail, Step::Hang, Step::Fail, Step::Ok];
    let mut h = harness(Mode::ExplicitDegraded, &script, Some(7), false);
    let down_at = h.clock.elapsed();
    assert!(h.sup.report("cache.get", &unavailable()));
    assert_eq!(h.next_event().await.kind, EventKind::Degraded);
    for _ in 0..3 {
        h.sup.note_served_degraded();
    }
    for step in &script[..script.len() - 1] {
        h.fail_through(*step).await;
        // Ordinary successes or more failures never end an outage; only a probe does.
        h.no_event();
        assert!(!h.sup.is_healthy());
    }
    assert!(matches!(h.next_probe().await, Step::Ok));
    let up_at_least = h.clock.elapsed() - down_at;
    let e = h.next_event().await;
    let EventKind::Recovered {
        outage,
        served_degraded,
        dropped_or_replayed,
    } = e.kind
    else {
        panic!("expected Recovered, got {e:?}");
    };
    assert_eq!(served_degraded, 3);
    assert_eq!(dropped_or_replayed, 7, "the hook's count");
    assert_eq!(
        outage, up_at_least,
        "outage = manual time from the failure to the good probe"
    );
    assert!(e.error.is_none());
    assert!(h.sup.is_healthy());
    // Exactly once: nothing more, and the probe task has stopped probing.
    h.clock.advance(Duration::from_secs(60));
    tokio::task::yield_now().await;
    h.no_event();
    assert!(h.calls.try_recv().is_err(), "no probe after recovery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_outage_gets_its_own_pair_of_events() {
    let mut h = harness(Mode::ExplicitDegraded, &[Step::Ok, Step::Fail, Step::Ok], None, false);
    for n in 1..=2u64 {
        assert!(h.sup.report("cache.get", &unavailable()));
        assert_eq!(h.next_event().await.kind, EventKind::Degraded);
        assert_eq!(h.sup.outage_number(), n);
        while matches!(h.next_probe().await, Step::Fail) {}
        assert!(matches!(
            h.next_event().await.kind,
            EventKind::Recovered {
                served_degraded: 0,
                dropped_or_replayed: 0,
                ..
            }
        ));
        h.no_event();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_reports_unavailable_at_runtime_once_per_outage() {
    let mut h = harness(Mode::StrictDistributed, &[Step::Ok], None, false);
    assert!(h.sup.report("cache.set", &unavailable()));
    assert!(!h.sup.report("cache.get", &unavailable()));
    let e = h.next_event().await;
    assert_eq!(e.kind, EventKind::UnavailableAtRuntime { op: "cache.set" });
    assert_eq!(e.mode, Mode::StrictDistributed);
    h.no_event();
    h.next_probe().await;
    assert!(matches!(h.next_event().await.kind, EventKind::Recovered { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_down_emits_unavailable_at_startup_then_recovers_on_a_good_probe() {
    let mut h = harness(Mode::ExplicitDegraded, &[Step::Fail, Step::Ok], None, true);
    assert_eq!(h.next_event().await.kind, EventKind::UnavailableAtStartup);
    assert!(!h.sup.is_healthy());
    h.fail_through(Step::Fail).await;
    h.no_event();
    h.next_probe().await;
    assert!(matches!(h.next_event().await.kind, EventKind::Recovered { .. }));
    assert!(h.sup.is_healthy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_supervisor_stops_its_probe_task() {
    let mut h = harness(Mode::ExplicitDegraded, &[], None, false);
    assert!(h.sup.report("cache.get", &unavailable()));
    h.fail_through(Step::Fail).await;
    let token = Arc::clone(&h.token);
    assert!(
        Arc::strong_count(&token) >= 3,
        "the probe (held by the task) holds a clone"
    );
    drop(h.sup);
    let give_up = tokio::time::Instant::now() + REAL_DEADLINE;
    while Arc::strong_count(&token) > 2 {
        assert!(
            tokio::time::Instant::now() < give_up,
            "the probe task outlived its supervisor"
        );
        tokio::task::yield_now().await;
    }
    // And nothing probes any more.
    h.clock.advance(Duration::from_secs(60));
    tokio::task::yield_now().await;
    assert!(h.calls.try_recv().is_err());
}

#[test]
fn backoff_doubles_from_min_to_the_probe_period() {
    let c = config();
    let waits: Vec<_> = (0..7).map(|n| c.backoff(n).as_millis()).collect();
    assert_eq!(waits, [100, 200, 400, 800, 1000, 1000, 1000]);
    assert_eq!(c.backoff(u32::MAX), Duration::from_secs(1));
}

#[test]
fn a_supervisor_needs_a_runtime() {
    let ctx = SupervisorContext::new(Component::Cache, Mode::ExplicitDegraded, Events::default());
    let err = Supervisor::new(ctx, || async { Ok(()) }, None).unwrap_err();
    assert_eq!(err.kind(), palisade_cache_core::ErrorKind::Config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_start_at_most_one_period_apart_even_when_each_hangs_to_its_deadline() {
    // Every probe hangs for its whole deadline (250 ms), as a probe queued in a client
    // that is still reconnecting does. Waits count from a probe's start, and jitter only
    // shortens them: once the backoff has reached the period (1 s), consecutive probes
    // start between 0.8 s and 1 s apart (± the 50 ms steps of the manual clock).
    let script = [Step::Hang; 10];
    let mut h = harness(Mode::ExplicitDegraded, &script, None, false);
    assert!(h.sup.report("cache.get", &unavailable()));
    assert_eq!(h.next_event().await.kind, EventKind::Degraded);
    let mut starts = Vec::new();
    for _ in 0..script.len() {
        h.fail_through(Step::Hang).await;
        // The manual time the probe itself saw: exact, however late this task looks.
        starts.push(h.last_probe_at);
    }
    let step = Duration::from_millis(50);
    // Attempts 0..3 wait 100, 200, 400, 800 ms; from the fifth on, the period.
    for pair in starts[4..].windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap <= Duration::from_secs(1) + step, "probes {gap:?} apart: {starts:?}");
        assert!(
            gap + step >= Duration::from_millis(800),
            "probes {gap:?} apart: {starts:?}"
        );
    }
    h.no_event();
}

/// The suspected race of the previous design: the probe task's handle was stored after
/// the state lock was released, so a late store from outage n could abort outage n+1's
/// probe and leave the primary down for good, with no `Recovered`. The handle is now
/// stored with the state, under its lock. Thousands of back-to-back outages, reported
/// from several tasks at once while their probes end them at once: every outage ends
/// with exactly one `Recovered`, and the supervisor ends healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_outages_each_end_with_their_own_recovered() {
    let events = Events::new(16);
    let ctx = SupervisorContext::new(Component::Cache, Mode::ExplicitDegraded, events.clone()).with_config(
        SupervisorConfig::default()
            .with_backoff_min(Duration::from_micros(1))
            .with_probe_period(Duration::from_micros(20))
            .with_jitter(0.0),
    );
    let sup = Arc::new(Supervisor::new(ctx, || async { Ok(()) }, None).unwrap());
    let (mut downs, mut ups) = (0u64, 0u64);
    let mut rx = events.subscribe();
    let counter = tokio::spawn(async move {
        let (mut d, mut u) = (0u64, 0u64);
        loop {
            match rx.recv().await {
                Ok(e) if e.kind == EventKind::Degraded => d += 1,
                Ok(e) if matches!(e.kind, EventKind::Recovered { .. }) => u += 1,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => panic!("the counter fell behind"),
                Err(broadcast::error::RecvError::Closed) => return (d, u),
            }
        }
    });
    let reporters: Vec<_> = (0..4)
        .map(|_| {
            let sup = Arc::clone(&sup);
            tokio::spawn(async move {
                let mut started = 0u64;
                let until = std::time::Instant::now() + Duration::from_secs(2);
                while started < 1_000 && std::time::Instant::now() < until {
                    if sup.report("test.op", &unavailable()) {
                        started += 1;
                    }
                    tokio::task::yield_now().await;
                }
                started
            })
        })
        .collect();
    let mut started = 0;
    for r in reporters {
        started += r.await.unwrap();
    }
    // The last outage ends too: no probe loop was lost.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while !sup.is_healthy() {
        assert!(std::time::Instant::now() < until, "stuck down after {started} outages");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(sup);
    drop(events);
    if let Ok((d, u)) = counter.await {
        downs = d;
        ups = u;
    }
    assert!(started > 100, "the race needs many outages: {started}");
    assert_eq!(downs, started, "one Degraded per outage");
    assert_eq!(ups, started, "one Recovered per outage");
}
