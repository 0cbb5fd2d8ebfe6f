//! When the next REGISTER, SUBSCRIBE or PUBLISH goes out. Each registration,
//! subscription and publication task keeps one [`RefreshSchedule`]: it holds the next
//! deadline and the failures since the last success, places the refresh before the
//! granted expiry, backs off after failures (2, 4, 8 … s; refusals from 30 s; at most
//! 300 s; a Retry-After wins), and sleeps until the deadline. The tasks keep their
//! protocol (keep-alive, NOTIFY-driven changes, entity tags); the timing lives here
//! only, and is tested on tokio's paused clock.

use std::future::Future;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

/// Answers to a REGISTER that will not change soon (credentials, no such user):
/// their back-off starts at [`FIRST_RETRY_REFUSED`].
pub(crate) const REGISTER_REFUSALS: &[u16] = &[401, 403, 404, 407, 495];

/// Answers to a SUBSCRIBE or PUBLISH that will not change soon: the registration's,
/// plus method or event package not supported, and declined.
pub(crate) const SUBSCRIBE_REFUSALS: &[u16] = &[401, 403, 404, 405, 407, 489, 501, 603];

/// Seconds before the first retry after a failure that may pass (timeout, 5xx...).
const FIRST_RETRY: u32 = 2;
/// Seconds before the first retry after a refusal.
const FIRST_RETRY_REFUSED: u32 = 30;
/// The longest wait between two attempts, seconds.
const LONGEST_RETRY: u32 = 300;
/// The back-off doubles at most this many times.
const MAX_DOUBLINGS: u32 = 6;

/// Seconds to wait after the (`failures` + 1)-th failure in a row: the first retry,
/// doubled per earlier failure (at most [`MAX_DOUBLINGS`] times), at most
/// [`LONGEST_RETRY`]. So 2, 4, 8 … 128 s, and 30, 60, 120, 240, 300 s for refusals.
pub(crate) fn backoff(failures: u32, refused: bool) -> u32 {
    let base = if refused {
        FIRST_RETRY_REFUSED
    } else {
        FIRST_RETRY
    };
    base.saturating_mul(1 << failures.min(MAX_DOUBLINGS))
        .min(LONGEST_RETRY)
        .max(base)
}

/// When to refresh something that expires in `expires` seconds: 10 s before expiry
/// when that leaves at least 30 s, else at half the time (at least 1 s).
pub(crate) fn refresh_after(expires: u32) -> Duration {
    let secs = if expires >= 40 {
        expires - 10
    } else {
        (expires / 2).max(1)
    };
    Duration::from_secs(u64::from(secs))
}

/// One task's next attempt: when it is due (never, when `None`) and how many
/// attempts failed since the last success.
#[derive(Debug, Clone)]
pub(crate) struct RefreshSchedule {
    next: Option<Instant>,
    failures: u32,
    refusals: &'static [u16],
}

impl RefreshSchedule {
    /// A schedule with nothing due; `refusals` are the codes whose back-off starts
    /// at 30 s ([`REGISTER_REFUSALS`] or [`SUBSCRIBE_REFUSALS`]).
    pub(crate) fn new(refusals: &'static [u16]) -> RefreshSchedule {
        RefreshSchedule {
            next: None,
            failures: 0,
            refusals,
        }
    }

    /// When the next attempt is due; `None`: none is planned.
    #[cfg(test)]
    pub(crate) fn at(&self) -> Option<Instant> {
        self.next
    }

    /// Failed attempts since the last success.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// The next attempt is due at once.
    pub(crate) fn due_now(&mut self, now: Instant) {
        self.next = Some(now);
    }

    /// The next attempt is due `secs` seconds from `now`.
    pub(crate) fn due_in(&mut self, now: Instant, secs: u32) {
        self.next = Some(now + Duration::from_secs(u64::from(secs)));
    }

    /// The other side says what we hold now expires in `expires` seconds: refresh
    /// before that, or earlier if an attempt is already due earlier.
    pub(crate) fn expires_in(&mut self, now: Instant, expires: u32) {
        let at = now + refresh_after(expires);
        self.next = Some(self.next.map_or(at, |n| n.min(at)));
    }

    /// An attempt succeeded and was granted `granted` seconds: the back-off starts
    /// over and the refresh is due before expiry. Returns the time until then.
    pub(crate) fn succeeded(&mut self, now: Instant, granted: u32) -> Duration {
        self.failures = 0;
        let after = refresh_after(granted);
        self.next = Some(now + after);
        after
    }

    /// An attempt failed with `code`: the next is due after the `Retry-After` the
    /// answer gave, else after the back-off for this failure. Returns that wait in
    /// seconds.
    pub(crate) fn failed(&mut self, now: Instant, code: u16, retry_after: Option<u32>) -> u32 {
        let refused = self.refusals.contains(&code);
        let wait = retry_after.unwrap_or_else(|| backoff(self.failures, refused));
        self.failures = self.failures.saturating_add(1);
        self.due_in(now, wait);
        wait
    }

    /// No attempt is planned until one is asked for again.
    pub(crate) fn stop(&mut self) {
        self.next = None;
    }

    /// Sleeps until the deadline as it stands now, or forever when none is planned.
    /// The future does not borrow the schedule, so a `select!` handler may change it.
    pub(crate) fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let next = self.next;
        async move {
            match next {
                Some(at) => sleep_until(at).await,
                None => std::future::pending().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert_eq!(backoff(0, false), 2);
        assert_eq!(backoff(1, false), 4);
        assert_eq!(backoff(10, false), 128);
        assert_eq!(backoff(0, true), 30);
        assert_eq!(backoff(30, true), 300);
    }

    #[test]
    fn refresh_comes_before_expiry() {
        assert_eq!(refresh_after(300), Duration::from_secs(290));
        assert_eq!(refresh_after(40), Duration::from_secs(30));
        assert_eq!(refresh_after(39), Duration::from_secs(19));
        assert_eq!(refresh_after(10), Duration::from_secs(5));
        assert_eq!(refresh_after(1), Duration::from_secs(1));
        assert_eq!(refresh_after(0), Duration::from_secs(1));
    }

    /// What one scripted attempt answers.
    #[derive(Clone, Copy)]
    enum Answer {
        /// A success granting this many seconds.
        Granted(u32),
        /// A failure: code and Retry-After.
        Failed(u16, Option<u32>),
    }

    /// Runs `answers` through `schedule` the way the tasks do (wait, attempt,
    /// reschedule) and returns the second of each attempt since the start, plus the
    /// second the attempt after the last one is due (`None`: none).
    async fn attempts(
        schedule: &mut RefreshSchedule,
        answers: &[Answer],
    ) -> (Vec<u64>, Option<u64>) {
        let start = Instant::now();
        let mut seen = Vec::new();
        for answer in answers {
            schedule.wait().await;
            let now = Instant::now();
            seen.push((now - start).as_secs());
            match *answer {
                Answer::Granted(secs) => {
                    schedule.succeeded(now, secs);
                }
                Answer::Failed(code, retry_after) => {
                    schedule.failed(now, code, retry_after);
                }
            }
        }
        let next = schedule.at().map(|at| (at - start).as_secs());
        (seen, next)
    }

    fn starting_now(refusals: &'static [u16]) -> RefreshSchedule {
        let mut s = RefreshSchedule::new(refusals);
        s.due_now(Instant::now());
        s
    }

    #[tokio::test(start_paused = true)]
    async fn two_failures_then_a_refresh_before_expiry() {
        let mut s = starting_now(REGISTER_REFUSALS);
        let script = [
            Answer::Failed(503, None),
            Answer::Failed(503, None),
            Answer::Granted(60),
            Answer::Granted(60),
        ];
        let (seen, next) = attempts(&mut s, &script).await;
        assert_eq!(seen, vec![0, 2, 6, 56]);
        assert_eq!(next, Some(106));
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_back_off_from_30_s_to_300_s() {
        let mut s = starting_now(REGISTER_REFUSALS);
        let script = [Answer::Failed(403, None); 7];
        let (seen, next) = attempts(&mut s, &script).await;
        // Waits 30, 60, 120, 240, 300, 300, 300.
        assert_eq!(seen, vec![0, 30, 90, 210, 450, 750, 1050]);
        assert_eq!(next, Some(1350));
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_back_off_to_128_s() {
        let mut s = starting_now(REGISTER_REFUSALS);
        let script = [Answer::Failed(408, None); 9];
        let (seen, _) = attempts(&mut s, &script).await;
        // Waits 2, 4, 8, 16, 32, 64, 128, 128.
        assert_eq!(seen, vec![0, 2, 6, 14, 30, 62, 126, 254, 382]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_wins_over_the_back_off() {
        let mut s = starting_now(SUBSCRIBE_REFUSALS);
        let script = [
            Answer::Failed(503, Some(17)),
            Answer::Failed(489, Some(5)),
            Answer::Failed(503, None),
        ];
        let (seen, next) = attempts(&mut s, &script).await;
        assert_eq!(seen, vec![0, 17, 22]);
        // The third failure in a row without Retry-After: 2 × 2² s.
        assert_eq!(next, Some(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_back_off() {
        let mut s = starting_now(REGISTER_REFUSALS);
        let script = [
            Answer::Failed(500, None),
            Answer::Failed(500, None),
            Answer::Failed(500, None),
            Answer::Granted(20),
            Answer::Failed(500, None),
        ];
        let (seen, next) = attempts(&mut s, &script).await;
        // 0, +2, +4, +8 → success at 14 s, refresh at 14 + 10; that fails → +2 again.
        assert_eq!(seen, vec![0, 2, 6, 14, 24]);
        assert_eq!(next, Some(26));
        assert_eq!(s.failures(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn subscription_refusals_include_unsupported_packages() {
        for code in [404, 405, 489, 501, 603] {
            let mut s = starting_now(SUBSCRIBE_REFUSALS);
            assert_eq!(s.failed(Instant::now(), code, None), 30, "{code}");
        }
        // A registrar's 405 is not a refusal of the registration table.
        let mut s = starting_now(REGISTER_REFUSALS);
        assert_eq!(s.failed(Instant::now(), 405, None), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_expiry_brings_the_refresh_forward() {
        let start = Instant::now();
        let mut s = RefreshSchedule::new(SUBSCRIBE_REFUSALS);
        s.succeeded(start, 3600);
        s.expires_in(start, 60);
        assert_eq!(s.at(), Some(start + Duration::from_secs(50)));
        // A later one does not push it back.
        s.expires_in(start, 3600);
        assert_eq!(s.at(), Some(start + Duration::from_secs(50)));
        // With nothing planned, it plans one.
        s.stop();
        s.expires_in(start, 20);
        assert_eq!(s.at(), Some(start + Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn stopped_means_no_attempt_even_after_a_day() {
        let mut s = starting_now(REGISTER_REFUSALS);
        s.succeeded(Instant::now(), 60);
        s.stop();
        assert_eq!(s.at(), None);
        let waited = tokio::time::timeout(Duration::from_secs(7 * 86_400), s.wait()).await;
        assert!(waited.is_err(), "a stopped schedule woke up");
    }
}
