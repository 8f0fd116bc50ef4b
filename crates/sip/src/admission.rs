//! Admission control for new calls: a cap on calls in progress, a rate of new calls, and
//! shedding of INVITEs that waited too long in the inbound queue. Past any of them a new
//! INVITE is answered `503 Service Unavailable` with `Retry-After` at once and statelessly
//! (RFC 3261 §8.2.7), so an overloaded endpoint spends its time on the calls it has already
//! admitted. In-dialog requests, responses and ACKs are never refused here.

use std::time::{Duration, Instant};

/// Limits on new inbound calls, in [`crate::endpoint::EndpointConfig::admission`].
///
/// The defaults never refuse a call on a normal deployment: they only bite when the endpoint
/// is flooded or far behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Most calls in progress at once: dialogs not yet ended plus INVITEs being answered.
    /// `None` (or 0) is unlimited. Default 5,000 (about 100 MB of state; a feature server usually
    /// carries hundreds).
    pub max_calls: Option<usize>,
    /// Most new calls per second, as a token bucket that holds one second's worth (bursts of
    /// up to this many). `None` (or 0) is unlimited (the default: the sustainable rate depends on the
    /// machine and the applications; `max_queue_delay` sheds load without knowing it).
    pub max_calls_per_sec: Option<u32>,
    /// An INVITE that waited longer than this between arriving on the socket and reaching the
    /// core is refused: the core is behind, and the caller has already retransmitted. `None`
    /// never sheds. Default 1 s (twice T1: an endpoint that keeps up waits microseconds).
    pub max_queue_delay: Option<Duration>,
    /// The `Retry-After` of the 503, in whole seconds (rounded up, at least 1). Default 5 s.
    pub retry_after: Duration,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            max_calls: Some(5_000),
            max_calls_per_sec: None,
            max_queue_delay: Some(Duration::from_secs(1)),
            retry_after: Duration::from_secs(5),
        }
    }
}

/// Which limit refused a new call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_calls` calls are in progress.
    MaxCalls,
    /// Over `max_calls_per_sec`.
    Rate,
    /// The INVITE waited longer than `max_queue_delay`.
    QueueDelay,
    /// The application's queue of calls to accept is full, or nobody accepts calls.
    NoCapacity,
    /// The endpoint is draining (never from [`Gate::check`]; the core checks it first).
    Draining,
}

/// The admission decision and the state it keeps (the rate's token bucket), without I/O.
#[derive(Debug)]
pub(crate) struct Gate {
    config: Admission,
    tokens: f64,
    refilled: Instant,
}

impl Gate {
    pub(crate) fn new(config: Admission, now: Instant) -> Self {
        Gate {
            config,
            tokens: config.max_calls_per_sec.map_or(0.0, f64::from),
            refilled: now,
        }
    }

    /// Whether a new INVITE that the transport read at `received` may be taken at `now`, with
    /// `in_progress` calls already in progress. Taking it uses up a token of the rate.
    pub(crate) fn check(
        &mut self,
        in_progress: usize,
        received: Instant,
        now: Instant,
    ) -> Result<(), Refusal> {
        if let Some(max) = self.config.max_queue_delay
            && now.saturating_duration_since(received) > max
        {
            return Err(Refusal::QueueDelay);
        }
        if let Some(max) = self.config.max_calls.filter(|&max| max > 0)
            && in_progress >= max
        {
            return Err(Refusal::MaxCalls);
        }
        if let Some(rate) = self.config.max_calls_per_sec.filter(|&rate| rate > 0) {
            let rate = f64::from(rate);
            let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(rate);
            self.refilled = now;
            if self.tokens < 1.0 {
                return Err(Refusal::Rate);
            }
            self.tokens -= 1.0;
        }
        Ok(())
    }

    /// The `Retry-After` value: whole seconds, rounded up, at least 1.
    pub(crate) fn retry_after_secs(&self) -> u64 {
        let retry = self.config.retry_after;
        let secs = retry
            .as_secs()
            .saturating_add(u64::from(retry.subsec_nanos() > 0));
        secs.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Admission {
        Admission {
            max_calls: None,
            max_calls_per_sec: None,
            max_queue_delay: None,
            retry_after: Duration::from_millis(1500),
        }
    }

    #[test]
    fn the_defaults_take_every_call_of_a_normal_deployment() {
        let start = Instant::now();
        let mut gate = Gate::new(Admission::default(), start);
        for i in 0..1_000 {
            assert_eq!(
                gate.check(i, start, start + Duration::from_millis(1)),
                Ok(())
            );
        }
        assert_eq!(gate.retry_after_secs(), 5);
    }

    #[test]
    fn the_rate_is_a_token_bucket_of_one_seconds_worth() {
        let start = Instant::now();
        let mut gate = Gate::new(
            Admission {
                max_calls_per_sec: Some(10),
                ..config()
            },
            start,
        );
        let taken = (0..15)
            .filter(|_| gate.check(0, start, start).is_ok())
            .count();
        assert_eq!(taken, 10, "a burst of one second's worth");
        assert_eq!(gate.check(0, start, start), Err(Refusal::Rate));
        let later = start + Duration::from_millis(300);
        let taken = (0..15)
            .filter(|_| gate.check(0, later, later).is_ok())
            .count();
        assert_eq!(taken, 3, "refilled at 10 per second");
        let much_later = start + Duration::from_secs(60);
        let taken = (0..15)
            .filter(|_| gate.check(0, much_later, much_later).is_ok())
            .count();
        assert_eq!(taken, 10, "never more than a second's worth");
    }

    #[test]
    fn calls_in_progress_and_queue_delay_are_capped_and_zero_is_unlimited() {
        let start = Instant::now();
        let mut gate = Gate::new(
            Admission {
                max_calls: Some(2),
                max_queue_delay: Some(Duration::from_millis(100)),
                ..config()
            },
            start,
        );
        assert_eq!(gate.check(1, start, start), Ok(()));
        assert_eq!(gate.check(2, start, start), Err(Refusal::MaxCalls));
        let late = start + Duration::from_millis(101);
        assert_eq!(gate.check(0, start, late), Err(Refusal::QueueDelay));
        assert_eq!(gate.retry_after_secs(), 2, "rounded up");
        let mut zero = Gate::new(
            Admission {
                max_calls: Some(0),
                max_calls_per_sec: Some(0),
                retry_after: Duration::ZERO,
                ..config()
            },
            start,
        );
        assert_eq!(zero.check(1_000_000, start, start), Ok(()));
        assert_eq!(zero.retry_after_secs(), 1);
        let forever = Gate::new(
            Admission {
                retry_after: Duration::MAX,
                ..config()
            },
            start,
        );
        assert_eq!(forever.retry_after_secs(), u64::MAX);
    }
}
