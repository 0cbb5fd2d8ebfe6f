//! The core's one timer table: every delay in the call logic (session refresh and
//! expiry, auto-answer, delayed forwarding, auto hang-up, the hang-up grace, the
//! exit grace) is an entry here with its deadline, instead of a spawned sleep. The
//! driver sleeps until [`Timers::next`] and then hands the time in.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::command::CallId;

/// What a timer does when it fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The session timer armed as `generation` (a refresh of ours is due, or the
    /// other side's never came).
    Session { call: CallId, generation: u64 },
    /// `hangup` gave the far end its time: end the call here if it is still there.
    HangupGrace { call: CallId },
    /// Auto-answer a ringing call.
    AutoAnswer { call: CallId },
    /// Forward a ringing call now.
    Forward { call: CallId, target: String },
    /// `autoHangUpTime` reached.
    AutoHangup { call: CallId },
    /// `exit` waited long enough for calls to end and registrars to answer.
    ExitGrace,
}

impl Timer {
    /// The call the timer belongs to, if any.
    pub(crate) fn call(&self) -> Option<CallId> {
        match self {
            Timer::Session { call, .. }
            | Timer::HangupGrace { call }
            | Timer::AutoAnswer { call }
            | Timer::Forward { call, .. }
            | Timer::AutoHangup { call } => Some(*call),
            Timer::ExitGrace => None,
        }
    }
}

/// Timers by deadline; entries with the same deadline fire in the order they were
/// set.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    entries: BTreeMap<(Instant, u64), Timer>,
    next_seq: u64,
}

impl Timers {
    /// Arms `timer` to fire at `at`.
    pub(crate) fn set(&mut self, at: Instant, timer: Timer) {
        self.next_seq += 1;
        self.entries.insert((at, self.next_seq), timer);
    }

    /// Removes every timer `drop` says is moot (a call that ended...).
    pub(crate) fn cancel(&mut self, mut drop: impl FnMut(&Timer) -> bool) {
        self.entries.retain(|_, t| !drop(t));
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.entries.keys().next().map(|(at, _)| *at)
    }

    /// Takes the earliest timer that is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let key = *self.entries.keys().next()?;
        if key.0 > now {
            return None;
        }
        self.entries.remove(&key)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_deadline_order_then_set_order() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.set(t0 + Duration::from_secs(5), Timer::AutoHangup { call: 1 });
        timers.set(t0 + Duration::from_secs(1), Timer::AutoAnswer { call: 2 });
        timers.set(t0 + Duration::from_secs(1), Timer::AutoAnswer { call: 3 });
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        let now = t0 + Duration::from_secs(2);
        assert_eq!(timers.pop_due(now), Some(Timer::AutoAnswer { call: 2 }));
        assert_eq!(timers.pop_due(now), Some(Timer::AutoAnswer { call: 3 }));
        assert_eq!(timers.pop_due(now), None);
        timers.cancel(|t| matches!(t, Timer::AutoHangup { call: 1 }));
        assert_eq!(timers.next(), None);
        assert_eq!(timers.len(), 0);
    }
}
