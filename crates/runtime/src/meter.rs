//! Guest CPU time: what `cpu_budget` bounds.
//!
//! A run's guest code executes in *segments*: stretches in which it runs continuously on one
//! OS thread. A segment opens when the guest is entered, when an async host call returns and
//! when an epoch yield resumes; it closes when an async host call starts, at every epoch
//! callback and when the run ends. Those are the only places a run can suspend, so time the
//! run spends queued, parked in a host call, paused (SIGSTOP) or preempted by other threads
//! falls between segments or is not CPU time of the guest's thread, and is never charged.
//!
//! Reading a thread's CPU clock is a system call (measured 1.9 us on the project's loaded 2-core
//! VM, against 0.09 us for the monotonic clock), so the meter reads it only around segments
//! that an epoch tick interrupts: the yield after each epoch callback reopens the segment with
//! a CPU reading, and closing such a segment reads the clock again. A segment that no tick
//! interrupted is charged its wall time, but at most one epoch tick: the ticker interrupts a
//! guest that runs longer than that, so time beyond one tick is time the guest's thread did
//! not run (a pause of the whole process stops the ticker too). Only a ticker thread that is
//! itself starved lets a segment run longer uncharged, by about as long as the ticker is late.
//! A sip:refer run, over in microseconds, thus makes no system call for its meter (measured:
//! 23 CPU-clock reads in 2,000 runs).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The CPU time charged to one run.
pub(crate) struct CpuMeter {
    used: Duration,
    budget: Duration,
    /// The most a segment without a CPU reading is charged: one epoch tick.
    unmeasured_cap: Duration,
    segment: Arc<Segment>,
}

impl CpuMeter {
    /// A meter with nothing charged and no segment open.
    pub(crate) fn new(budget: Duration, epoch_tick: Duration) -> Self {
        CpuMeter {
            used: Duration::ZERO,
            budget,
            unmeasured_cap: epoch_tick,
            segment: Arc::new(Segment::new()),
        }
    }

    /// Forgets what was charged and opens a segment: called right before the guest is
    /// entered, so instantiation and queueing are not charged to it.
    pub(crate) fn start(&mut self) {
        self.used = Duration::ZERO;
        self.segment.open(false);
    }

    /// Closes the segment and charges it: an async host call starts, or the run ended.
    pub(crate) fn pause(&mut self) {
        self.used += self.segment.close(self.unmeasured_cap);
    }

    /// Opens a segment: an async host call returned and the guest runs again.
    pub(crate) fn resume(&self) {
        self.segment.open(false);
    }

    /// The epoch callback: charges the segment that ran up to now. The guest must then
    /// either trap ([`CpuMeter::over_budget`]) or yield with [`CpuMeter::yield_now`].
    pub(crate) fn tick(&mut self) {
        self.pause();
    }

    /// True once the charged time exceeds the budget.
    pub(crate) fn over_budget(&self) -> bool {
        self.used > self.budget
    }

    /// CPU time charged so far.
    pub(crate) fn used(&self) -> Duration {
        self.used
    }

    /// The budget.
    pub(crate) fn budget(&self) -> Duration {
        self.budget
    }

    /// The yield of an epoch callback: lets the executor run other tasks, then reopens the
    /// segment with a CPU reading. The future completes on the thread that resumes the guest,
    /// in the poll that resumes it, so the reading is that thread's.
    pub(crate) fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let segment = Arc::clone(&self.segment);
        Box::pin(async move {
            tokio::task::yield_now().await;
            segment.open(true);
        })
    }
}

/// The open segment, shared between the meter and the future that reopens it after a yield
/// (which cannot borrow the store). Only the thread running the guest touches it at a time.
struct Segment {
    base: Instant,
    /// Wall-clock time the segment opened, in ns since `base`, plus one; 0 while closed.
    opened: AtomicU64,
    /// The thread whose CPU clock was read at the opening; 0 when it was not read.
    thread: AtomicU64,
    /// That thread's CPU time at the opening, in ns.
    cpu_ns: AtomicU64,
}

impl Segment {
    fn new() -> Self {
        Segment {
            base: Instant::now(),
            opened: AtomicU64::new(0),
            thread: AtomicU64::new(0),
            cpu_ns: AtomicU64::new(0),
        }
    }

    fn wall_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn open(&self, read_cpu: bool) {
        let (thread, cpu_ns) = read_cpu.then(thread_cpu_time).flatten().unwrap_or_default();
        self.thread.store(thread, Ordering::Relaxed);
        self.cpu_ns.store(cpu_ns, Ordering::Relaxed);
        self.opened
            .store(self.wall_ns().saturating_add(1), Ordering::Relaxed);
    }

    /// Closes the segment and returns what it is charged (nothing when none was open).
    fn close(&self, unmeasured_cap: Duration) -> Duration {
        let opened = self.opened.swap(0, Ordering::Relaxed);
        if opened == 0 {
            return Duration::ZERO;
        }
        let thread = self.thread.load(Ordering::Relaxed);
        if thread != 0
            && let Some((now_thread, now_ns)) = thread_cpu_time()
            && now_thread == thread
        {
            return Duration::from_nanos(
                now_ns.saturating_sub(self.cpu_ns.load(Ordering::Relaxed)),
            );
        }
        let wall = Duration::from_nanos(self.wall_ns().saturating_sub(opened - 1));
        wall.min(unmeasured_cap)
    }
}

/// The calling thread's id (never 0) and its CPU time in ns; `None` where the platform has no
/// per-thread CPU clock, and the meter then charges wall time capped at one tick.
#[cfg(unix)]
fn thread_cpu_time() -> Option<(u64, u64)> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the call has no other preconditions.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return None;
    }
    // SAFETY: pthread_self has no preconditions and cannot fail.
    let thread = unsafe { libc::pthread_self() } as usize as u64;
    let ns = u64::try_from(now.tv_sec)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(u64::try_from(now.tv_nsec).ok()?)?;
    (thread != 0).then_some((thread, ns))
}

#[cfg(not(unix))]
fn thread_cpu_time() -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Burns at least `cpu` of this thread's CPU time.
    fn spin(cpu: Duration) {
        let start = thread_cpu_time().expect("a thread CPU clock").1;
        while thread_cpu_time().expect("a thread CPU clock").1 - start < cpu.as_nanos() as u64 {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn a_measured_segment_is_charged_its_cpu_time_not_its_sleep() {
        let segment = Segment::new();
        segment.open(true);
        spin(Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(200));
        let charged = segment.close(Duration::from_millis(10));
        assert!(
            charged >= Duration::from_millis(20) && charged < Duration::from_millis(150),
            "{charged:?}"
        );
        assert_eq!(segment.close(Duration::from_millis(10)), Duration::ZERO);
    }

    #[test]
    fn an_unmeasured_segment_is_charged_at_most_one_tick() {
        let segment = Segment::new();
        segment.open(false);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            segment.close(Duration::from_millis(10)),
            Duration::from_millis(10)
        );
        segment.open(false);
        let charged = segment.close(Duration::from_millis(10));
        assert!(charged <= Duration::from_millis(10), "{charged:?}");
    }

    #[test]
    fn a_segment_closed_on_another_thread_is_charged_at_most_one_tick() {
        let segment = Arc::new(Segment::new());
        segment.open(true);
        std::thread::sleep(Duration::from_millis(30));
        let other = Arc::clone(&segment);
        let charged = std::thread::spawn(move || other.close(Duration::from_millis(10)))
            .join()
            .expect("thread ran");
        assert_eq!(charged, Duration::from_millis(10));
    }

    #[test]
    fn the_meter_sums_segments_and_compares_with_the_budget() {
        let mut meter = CpuMeter::new(Duration::from_millis(25), Duration::from_millis(10));
        meter.start();
        std::thread::sleep(Duration::from_millis(30));
        meter.pause();
        assert_eq!(meter.used(), Duration::from_millis(10));
        assert!(!meter.over_budget());
        meter.resume();
        std::thread::sleep(Duration::from_millis(30));
        meter.tick();
        assert_eq!(meter.used(), Duration::from_millis(20));
        meter.segment.open(true);
        spin(Duration::from_millis(10));
        meter.pause();
        assert!(meter.over_budget(), "{:?}", meter.used());
        meter.start();
        assert_eq!(meter.used(), Duration::ZERO);
    }
}
