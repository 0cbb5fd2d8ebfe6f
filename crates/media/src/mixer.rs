//! The conference mixer: which calls are merged into the phone's one conference, and
//! the audio they hear of each other.
//!
//! It lives on the media thread and runs at the bus rate ([`FRAME_SAMPLES`] a tick).
//! Each member's session reports the frame it just played ([`Mixer::heard`], after the
//! speaker gain, as MicroSIP's conference bridge does) and, when it is about to send,
//! adds the other members' latest frames to its microphone frame
//! ([`Mixer::mix_others_into`], clipped). A frame counts while it is from this tick or
//! the one before, so the order the sessions tick in does not matter and a member
//! that stops playing (held, no packets) falls silent instead of repeating itself.
//! Each member's own sink still plays that member: where the calls share one output
//! device the user hears every member there, so nothing is mixed into the sinks
//! here (a headless `file:` sink per call keeps its own call). Unmerged calls never
//! touch it. Memory is taken when the members change, never
//! per tick.

use crate::audio::FRAME_SAMPLES;

struct Member {
    call: u64,
    heard: [i16; FRAME_SAMPLES],
    /// The tick `heard` was written in; `None`: nothing heard yet.
    stamp: Option<u64>,
}

/// The phone's conference (at most one, like MicroSIP's).
#[derive(Default)]
pub struct Mixer {
    members: Vec<Member>,
    tick: u64,
}

impl Mixer {
    /// An empty conference.
    pub fn new() -> Mixer {
        Mixer::default()
    }

    /// Makes `calls` the members (duplicates ignored). Fewer than two calls is no
    /// conference at all. Members that stay keep what they last heard.
    pub(crate) fn set_members(&mut self, calls: &[u64]) {
        let mut wanted: Vec<u64> = calls.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.len() < 2 {
            wanted.clear();
        }
        self.members.retain(|m| wanted.contains(&m.call));
        for call in wanted {
            if !self.is_member(call) {
                self.members.push(Member {
                    call,
                    heard: [0; FRAME_SAMPLES],
                    stamp: None,
                });
            }
        }
    }

    /// Takes `call` out; with one member left, the conference ends.
    pub fn remove(&mut self, call: u64) {
        self.members.retain(|m| m.call != call);
        if self.members.len() < 2 {
            self.members.clear();
        }
    }

    /// Whether `call` is in the conference.
    pub(crate) fn is_member(&self, call: u64) -> bool {
        self.members.iter().any(|m| m.call == call)
    }

    /// The members, in the order they joined.
    pub fn members(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.call).collect()
    }

    /// Called once per tick, before any session ticks.
    pub fn begin_tick(&mut self) {
        self.tick = self.tick.wrapping_add(1);
    }

    /// `call` just played `frame` (bus rate; shorter frames are padded with silence).
    pub fn heard(&mut self, call: u64, frame: &[i16]) {
        let tick = self.tick;
        if let Some(m) = self.members.iter_mut().find(|m| m.call == call) {
            let n = frame.len().min(FRAME_SAMPLES);
            m.heard[..n].copy_from_slice(&frame[..n]);
            m.heard[n..].fill(0);
            m.stamp = Some(tick);
        }
    }

    /// Adds to `frame` (what `call` is about to send) what the other members heard
    /// this tick or the last one, clipped to 16 bits. Nothing for a non-member.
    pub fn mix_others_into(&self, call: u64, frame: &mut [i16]) {
        if !self.is_member(call) {
            return;
        }
        for m in &self.members {
            let fresh = m.stamp.is_some_and(|t| self.tick.wrapping_sub(t) <= 1);
            if m.call == call || !fresh {
                continue;
            }
            for (out, &x) in frame.iter_mut().zip(m.heard.iter()) {
                *out = out.saturating_add(x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: i16) -> [i16; FRAME_SAMPLES] {
        [v; FRAME_SAMPLES]
    }

    #[test]
    fn each_member_gets_the_others_not_itself() {
        let mut m = Mixer::new();
        m.set_members(&[1, 2, 3]);
        m.begin_tick();
        m.heard(1, &frame(100));
        m.heard(2, &frame(20));
        m.heard(3, &frame(3));
        let mut to1 = frame(1000);
        m.mix_others_into(1, &mut to1);
        assert_eq!(to1, frame(1023));
        let mut to2 = frame(0);
        m.mix_others_into(2, &mut to2);
        assert_eq!(to2, frame(103));
        let mut to3 = frame(0);
        m.mix_others_into(3, &mut to3);
        assert_eq!(to3, frame(120));
        // A call outside the conference is untouched, and its audio goes nowhere.
        m.heard(9, &frame(5000));
        let mut to9 = frame(7);
        m.mix_others_into(9, &mut to9);
        assert_eq!(to9, frame(7));
        let mut again = frame(0);
        m.mix_others_into(1, &mut again);
        assert_eq!(again, frame(23));
    }

    #[test]
    fn sums_are_clipped() {
        let mut m = Mixer::new();
        m.set_members(&[1, 2, 3]);
        m.begin_tick();
        m.heard(2, &frame(30_000));
        m.heard(3, &frame(30_000));
        let mut to1 = frame(10_000);
        m.mix_others_into(1, &mut to1);
        assert_eq!(to1, frame(i16::MAX));
        m.heard(2, &frame(-30_000));
        m.heard(3, &frame(-30_000));
        let mut low = frame(-10_000);
        m.mix_others_into(1, &mut low);
        assert_eq!(low, frame(i16::MIN));
    }

    #[test]
    fn old_frames_fall_silent() {
        let mut m = Mixer::new();
        m.set_members(&[1, 2]);
        m.begin_tick();
        m.heard(2, &frame(50));
        m.begin_tick();
        // Heard in the previous tick: still counts (2 may tick after 1).
        let mut to1 = frame(0);
        m.mix_others_into(1, &mut to1);
        assert_eq!(to1, frame(50));
        m.begin_tick();
        // Two ticks old: 2 stopped playing (held, no packets); silence, not a loop.
        let mut to1 = frame(0);
        m.mix_others_into(1, &mut to1);
        assert_eq!(to1, frame(0));
    }

    #[test]
    fn short_frames_are_padded() {
        let mut m = Mixer::new();
        m.set_members(&[1, 2]);
        m.begin_tick();
        m.heard(2, &frame(9));
        m.heard(2, &[4; 10]);
        let mut to1 = frame(0);
        m.mix_others_into(1, &mut to1);
        assert_eq!(&to1[..10], &[4; 10]);
        assert!(to1[10..].iter().all(|&s| s == 0));
    }

    #[test]
    fn membership() {
        let mut m = Mixer::new();
        m.set_members(&[4]);
        assert!(m.members().is_empty(), "one call is no conference");
        m.set_members(&[4, 5, 5, 6]);
        assert_eq!(m.members(), vec![4, 5, 6]);
        m.begin_tick();
        m.heard(5, &frame(11));
        m.set_members(&[5, 6]);
        assert_eq!(m.members(), vec![5, 6]);
        let mut to6 = frame(0);
        m.mix_others_into(6, &mut to6);
        assert_eq!(to6, frame(11), "a member that stays keeps its frame");
        m.remove(5);
        assert!(
            m.members().is_empty(),
            "the last member alone is no conference"
        );
        assert!(!m.is_member(6));
    }
}
