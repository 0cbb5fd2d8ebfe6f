//! Call recording and playing a file into a call, and the per-call [`Taps`] that
//! hook them (and the conference [`Mixer`]) into the media tick.
//!
//! This module owns the recorder (a mono mix of what a call sends and what it hears,
//! as MicroSIP records: its microphone and the call both go into one recorder), its
//! writer thread (which also writes a call's own `file:` output, [`FileWriterSink`]),
//! and the file player. The media tick only ever copies a frame into a
//! bounded channel: the disk is the writer thread's business, so a slow or full disk
//! never stalls a call. When the channel is full the frame is dropped and counted; a
//! write error is reported once (and the call goes on). Dropping the media thread's
//! half ends the recording: the writer drains what is queued and writes the final
//! WAV header, then says so through [`RecordingHandle::finish`].
//!
//! Everything runs at the bus rate ([`SAMPLE_RATE`], [`FRAME_SAMPLES`] a tick).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::audio::{AudioError, AudioSink, FileSink, FileSource, FRAME_SAMPLES, SAMPLE_RATE};
use crate::engine::MediaEvent;
use crate::mixer::Mixer;

/// Frames the writer thread may fall behind by before frames are dropped (1 s).
pub(crate) const RECORDER_QUEUE_FRAMES: usize = 50;

type Frame = [i16; FRAME_SAMPLES];

/// What a finished recording reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingStatus {
    /// The WAV file written.
    pub path: PathBuf,
    /// Frames on disk.
    pub frames_written: u64,
    /// Frames dropped because the writer thread was behind.
    pub frames_dropped: u64,
    /// The first write error, if any.
    pub error: Option<String>,
}

impl RecordingStatus {
    /// Seconds of audio on disk.
    pub fn seconds(&self) -> f64 {
        (self.frames_written * FRAME_SAMPLES as u64) as f64 / f64::from(SAMPLE_RATE)
    }
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    error: Mutex<Option<String>>,
}

impl Counters {
    fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn set_error(&self, e: String) {
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
    }
}

/// What goes to a writer thread: up to one bus frame of samples.
#[derive(Clone, Copy)]
struct Chunk {
    samples: Frame,
    len: usize,
}

/// The media thread's end of a writer thread's queue: hands chunks over without
/// ever waiting (a full queue drops them, counted), and tells the first write error
/// once.
struct Feed {
    path: PathBuf,
    tx: Option<SyncSender<Chunk>>,
    counters: Arc<Counters>,
    error_reported: bool,
    drop_logged: bool,
}

impl Feed {
    fn send(&mut self, chunk: Chunk) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(chunk) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.drop_logged {
                    self.drop_logged = true;
                    tracing::warn!(path = %self.path.display(), "audio file falls behind the disk; dropping audio");
                }
            }
            // The writer stopped: it failed (the error is in the counters).
            Err(TrySendError::Disconnected(_)) => self.tx = None,
        }
    }

    /// The writer's error, the first time it is asked after one happened.
    fn take_error(&mut self) -> Option<String> {
        if self.error_reported {
            return None;
        }
        let error = self.counters.error()?;
        self.error_reported = true;
        Some(error)
    }
}

/// The media thread's half of a recording: mixes one tick, hands it to the writer.
pub struct Recorder {
    feed: Feed,
    mix: Frame,
}

/// The caller's half of a writer thread (a recording, a `file:` sink): waits for
/// the writer to finish the file.
pub struct RecordingHandle {
    path: PathBuf,
    counters: Arc<Counters>,
    done: Receiver<()>,
}

/// Creates (or truncates) the WAV file `path` and starts its writer thread. The file
/// is created here, on the caller's thread, so its errors come back to the caller.
pub fn start_recording(path: &Path) -> Result<(Recorder, RecordingHandle), AudioError> {
    let sink = FileSink::create(path)?;
    start_recording_to(path, Box::new(sink))
}

/// [`start_recording`] into any sink (`path` names it in messages).
pub(crate) fn start_recording_to(
    path: &Path,
    sink: Box<dyn AudioSink>,
) -> Result<(Recorder, RecordingHandle), AudioError> {
    let (feed, handle) = spawn_writer(path, sink)?;
    Ok((
        Recorder {
            feed,
            mix: [0; FRAME_SAMPLES],
        },
        handle,
    ))
}

/// Starts the writer thread that owns `sink`: it writes what the [`Feed`] hands it,
/// and when the feed is dropped it drains the queue, finishes the sink (a WAV file
/// gets its final header) and says so through the [`RecordingHandle`].
fn spawn_writer(
    path: &Path,
    mut sink: Box<dyn AudioSink>,
) -> Result<(Feed, RecordingHandle), AudioError> {
    let (tx, rx) = mpsc::sync_channel::<Chunk>(RECORDER_QUEUE_FRAMES);
    let (done_tx, done) = mpsc::sync_channel(1);
    let counters = Arc::new(Counters::default());
    let shared = counters.clone();
    thread::Builder::new()
        .name("recorder".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            for chunk in rx.iter() {
                match sink.write(&chunk.samples[..chunk.len.min(FRAME_SAMPLES)]) {
                    Ok(()) => {
                        shared.written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        shared.set_error(e.to_string());
                        break;
                    }
                }
            }
            // Leaving the loop drops the receiver: the media thread sees it at once.
            if let Err(e) = sink.close() {
                shared.set_error(e.to_string());
            }
            let _ = done_tx.send(());
        })
        .map_err(|e| AudioError::File {
            path: path.to_path_buf(),
            message: format!("cannot start the recorder thread: {e}"),
        })?;
    Ok((
        Feed {
            path: path.to_path_buf(),
            tx: Some(tx),
            counters: counters.clone(),
            error_reported: false,
            drop_logged: false,
        },
        RecordingHandle {
            path: path.to_path_buf(),
            counters,
            done,
        },
    ))
}

impl Recorder {
    /// Adds `frame` (either direction) to this tick's mix, clipped.
    pub fn add(&mut self, frame: &[i16]) {
        for (m, &x) in self.mix.iter_mut().zip(frame) {
            *m = m.saturating_add(x);
        }
    }

    /// Hands this tick's mix to the writer (never waits: a full queue drops it) and
    /// starts the next. Returns the write error the first time one is seen.
    pub(crate) fn end_tick(&mut self) -> Option<String> {
        self.feed.send(Chunk {
            samples: self.mix,
            len: FRAME_SAMPLES,
        });
        self.mix.fill(0);
        self.feed.take_error()
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.feed.path
    }
}

/// A call's `file:` output (`audioOutputDevice=file:...`): an [`AudioSink`] whose
/// writes only hand the samples to a writer thread (the one recordings use), so the
/// media tick never waits for the disk. [`AudioSink::close`] only lets go of the
/// writer; the file is finished (final header) once [`RecordingHandle::finish`]
/// returns.
pub struct FileWriterSink {
    feed: Feed,
}

/// Creates (or truncates) the WAV file `path` on the caller's thread and starts the
/// writer thread that will fill it.
pub(crate) fn file_sink(path: &Path) -> Result<(FileWriterSink, RecordingHandle), AudioError> {
    let sink = FileSink::create(path)?;
    file_sink_to(path, Box::new(sink))
}

/// [`file_sink`] into any sink (`path` names it in messages).
pub(crate) fn file_sink_to(
    path: &Path,
    sink: Box<dyn AudioSink>,
) -> Result<(FileWriterSink, RecordingHandle), AudioError> {
    let (feed, handle) = spawn_writer(path, sink)?;
    Ok((FileWriterSink { feed }, handle))
}

impl AudioSink for FileWriterSink {
    fn write(&mut self, frame: &[i16]) -> Result<(), AudioError> {
        for piece in frame.chunks(FRAME_SAMPLES) {
            let mut chunk = Chunk {
                samples: [0; FRAME_SAMPLES],
                len: piece.len(),
            };
            chunk.samples[..piece.len()].copy_from_slice(piece);
            self.feed.send(chunk);
        }
        match self.feed.take_error() {
            Some(message) => Err(AudioError::File {
                path: self.feed.path.clone(),
                message,
            }),
            None => Ok(()),
        }
    }

    fn close(&mut self) -> Result<(), AudioError> {
        // The writer drains the queue and finishes the file by itself.
        self.feed.tx = None;
        Ok(())
    }
}

impl RecordingHandle {
    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits (at most `timeout`) for the writer to finish the file, once the media
    /// thread's [`Recorder`] is gone.
    pub fn finish(self, timeout: Duration) -> RecordingStatus {
        let finished = self.done.recv_timeout(timeout).is_ok();
        let mut error = self.counters.error();
        if !finished && error.is_none() {
            error = Some("the recorder did not finish the file in time".into());
        }
        RecordingStatus {
            path: self.path,
            frames_written: self.counters.written.load(Ordering::Relaxed),
            frames_dropped: self.counters.dropped.load(Ordering::Relaxed),
            error,
        }
    }
}

/// What happens when a played file runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlayEnd {
    /// Back to the microphone.
    #[default]
    Stop,
    /// From the start again.
    Loop,
    /// The call is hung up.
    Hangup,
}

/// Plays a file into a call instead of its microphone.
pub(crate) struct Player {
    file: FileSource,
    position: usize,
    at_end: PlayEnd,
    ended: bool,
}

impl Player {
    /// Loads `path` (any WAV the file source reads) now, on the caller's thread.
    pub fn open(path: &Path, at_end: PlayEnd) -> Result<Player, AudioError> {
        Ok(Player {
            file: FileSource::open(path)?,
            position: 0,
            at_end,
            ended: false,
        })
    }

    /// Overwrites `frame` with the next samples (silence after the end). Returns
    /// `true` on the tick the file runs out, unless it loops.
    pub fn fill(&mut self, frame: &mut [i16]) -> bool {
        let was_ended = self.ended;
        let samples = self.file.samples();
        let looping = self.at_end == PlayEnd::Loop && !samples.is_empty();
        let mut filled = 0;
        while filled < frame.len() && !self.ended {
            if self.position >= samples.len() {
                if !looping {
                    break;
                }
                self.position = 0;
            }
            let n = (frame.len() - filled).min(samples.len() - self.position);
            frame[filled..filled + n].copy_from_slice(&samples[self.position..self.position + n]);
            filled += n;
            self.position += n;
        }
        frame[filled..].fill(0);
        // The last samples went out in this frame: the file is over now.
        if !looping && self.position >= samples.len() {
            self.ended = true;
        }
        self.ended && !was_ended
    }
}

/// What one call adds to the plain tick: a file played in, a recorder, and its place
/// in the conference. The session calls these three hooks and nothing else (and asks
/// [`Taps::hears`] whether a frame it plays is used here).
#[derive(Default)]
pub struct Taps {
    recorder: Option<Recorder>,
    player: Option<Player>,
    /// The player ran out this tick (reported at the end of the tick).
    play_ended: Option<PlayEnd>,
}

impl Taps {
    /// Starts (`Some`) or stops (`None`) recording; a recorder replaced or removed
    /// is dropped, which finishes its file.
    pub(crate) fn set_recorder(&mut self, recorder: Option<Recorder>) {
        self.recorder = recorder;
    }

    /// Starts (`Some`) or stops (`None`) playing a file instead of the microphone.
    pub(crate) fn set_player(&mut self, player: Option<Player>) {
        self.player = player;
        self.play_ended = None;
    }

    /// Whether a recorder is set.
    pub fn is_recording(&self) -> bool {
        self.recorder.is_some()
    }

    /// Whether a file is playing instead of the microphone.
    pub fn is_playing(&self) -> bool {
        self.player.is_some()
    }

    /// The bus frame `call` is about to send, after the microphone gain: a playing
    /// file replaces it, the conference adds the other members, the recorder keeps
    /// a copy of the result.
    pub(crate) fn on_send(&mut self, call: u64, frame: &mut [i16; FRAME_SAMPLES], mixer: &Mixer) {
        if let Some(player) = self.player.as_mut() {
            if player.fill(frame) && self.play_ended.is_none() {
                self.play_ended = Some(player.at_end);
            }
        }
        mixer.mix_others_into(call, frame);
        if let Some(r) = self.recorder.as_mut() {
            r.add(frame);
        }
    }

    /// Whether anything here uses what `call` plays (a recorder, the conference).
    pub fn hears(&self, call: u64, mixer: &Mixer) -> bool {
        self.recorder.is_some() || mixer.is_member(call)
    }

    /// The bus frame `call` just played, after the speaker gain.
    pub(crate) fn on_heard(&mut self, call: u64, frame: &[i16], mixer: &mut Mixer) {
        mixer.heard(call, frame);
        if let Some(r) = self.recorder.as_mut() {
            r.add(frame);
        }
    }

    /// The end of `call`'s tick: the recording gets this tick's mix; a file that ran
    /// out and a recording that failed are reported (once) through `events`.
    pub(crate) fn end_tick(&mut self, call: u64, events: &mut dyn FnMut(MediaEvent)) {
        if let Some(r) = self.recorder.as_mut() {
            if let Some(error) = r.end_tick() {
                tracing::warn!(call, error = %error, "recording failed; the call goes on");
                events(MediaEvent::RecordingFailed {
                    call,
                    path: r.path().to_path_buf(),
                    error,
                });
            }
        }
        if let Some(at_end) = self.play_ended.take() {
            if at_end == PlayEnd::Stop {
                self.player = None;
            }
            events(MediaEvent::PlaybackEnded {
                call,
                hangup: at_end == PlayEnd::Hangup,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EventSink;
    use microsip_test_support::{goertzel, TempDir};
    use std::time::Instant;

    fn tone(hz: f64, frames: usize, amplitude: f64, start: usize) -> Vec<Frame> {
        (0..frames)
            .map(|f| {
                let mut out = [0i16; FRAME_SAMPLES];
                for (i, s) in out.iter_mut().enumerate() {
                    let n = (start + f * FRAME_SAMPLES + i) as f64;
                    *s = (amplitude
                        * (std::f64::consts::TAU * hz * n / f64::from(SAMPLE_RATE)).sin())
                        as i16;
                }
                out
            })
            .collect()
    }

    fn events() -> (EventSink, Arc<Mutex<Vec<MediaEvent>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (Box::new(move |e| s.lock().unwrap().push(e)), seen)
    }

    #[test]
    fn records_both_directions_into_a_finished_wav() {
        let dir = TempDir::new("media-recorder");
        let path = dir.join("call.wav");
        let (recorder, handle) = start_recording(&path).unwrap();
        let mut taps = Taps::default();
        taps.set_recorder(Some(recorder));
        let mixer = Mixer::new();
        let mut mixer_mut = Mixer::new();
        let (sink, seen) = events();
        let frames = 50; // 1 s
        let sent = tone(440.0, frames, 8000.0, 0);
        let heard = tone(1000.0, frames, 8000.0, 0);
        for i in 0..frames {
            let mut f = sent[i];
            taps.on_send(7, &mut f, &mixer);
            assert_eq!(f, sent[i], "recording does not change what is sent");
            taps.on_heard(7, &heard[i], &mut mixer_mut);
            taps.end_tick(7, &mut |e| sink(e));
            // Give the writer a chance so nothing is dropped on a slow machine.
            if i % 10 == 9 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        taps.set_recorder(None);
        let status = handle.finish(Duration::from_secs(5));
        assert_eq!(status.error, None);
        assert_eq!(status.frames_written + status.frames_dropped, frames as u64);
        assert!(seen.lock().unwrap().is_empty());
        // The header is final right after stop: hound reads the length from it.
        let reader = hound::WavReader::open(&path).unwrap();
        let spec = reader.spec();
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (1, SAMPLE_RATE, 16)
        );
        assert_eq!(
            reader.duration() as u64,
            status.frames_written * FRAME_SAMPLES as u64
        );
        let samples: Vec<i16> = reader.into_samples().map(|s| s.unwrap()).collect();
        let (p440, p1000, p700) = (
            goertzel(&samples, 440.0, SAMPLE_RATE),
            goertzel(&samples, 1000.0, SAMPLE_RATE),
            goertzel(&samples, 700.0, SAMPLE_RATE),
        );
        assert!(p440 > 100.0 * p700, "sent tone missing: {p440} vs {p700}");
        assert!(
            p1000 > 100.0 * p700,
            "heard tone missing: {p1000} vs {p700}"
        );
        assert!(
            (p440 / p1000 - 1.0).abs() < 0.2,
            "equal parts: {p440} {p1000}"
        );
    }

    /// A sink that blocks every write until released.
    struct Stuck(Arc<Mutex<()>>);

    impl AudioSink for Stuck {
        fn write(&mut self, _frame: &[i16]) -> Result<(), AudioError> {
            drop(self.0.lock().unwrap());
            Ok(())
        }
        fn close(&mut self) -> Result<(), AudioError> {
            Ok(())
        }
    }

    #[test]
    fn a_full_queue_drops_frames_instead_of_waiting() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let (mut recorder, handle) =
            start_recording_to(Path::new("stuck.wav"), Box::new(Stuck(gate.clone()))).unwrap();
        let started = Instant::now();
        let ticks = RECORDER_QUEUE_FRAMES * 3;
        for _ in 0..ticks {
            recorder.add(&[1; FRAME_SAMPLES]);
            assert_eq!(recorder.end_tick(), None);
        }
        // Not a timing assertion: a blocking send would never get here at all.
        let elapsed = started.elapsed();
        drop(held);
        drop(recorder);
        let status = handle.finish(Duration::from_secs(5));
        assert!(
            status.frames_dropped >= (ticks - RECORDER_QUEUE_FRAMES - 1) as u64,
            "{status:?} after {elapsed:?}"
        );
        assert_eq!(status.frames_written + status.frames_dropped, ticks as u64);
        assert_eq!(status.error, None);
    }

    /// A disk that is full from the first byte of audio.
    struct Full;

    impl AudioSink for Full {
        fn write(&mut self, _frame: &[i16]) -> Result<(), AudioError> {
            Err(AudioError::File {
                path: "full.wav".into(),
                message: "No space left on device".into(),
            })
        }
        fn close(&mut self) -> Result<(), AudioError> {
            Ok(())
        }
    }

    #[test]
    fn a_write_error_is_reported_once_and_the_tick_goes_on() {
        let (recorder, handle) = start_recording_to(Path::new("full.wav"), Box::new(Full)).unwrap();
        let mut taps = Taps::default();
        taps.set_recorder(Some(recorder));
        let (sink, seen) = events();
        let mixer = Mixer::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.lock().unwrap().is_empty() && Instant::now() < deadline {
            let mut f = [0; FRAME_SAMPLES];
            taps.on_send(3, &mut f, &mixer);
            taps.end_tick(3, &mut |e| sink(e));
            std::thread::sleep(Duration::from_millis(2));
        }
        for _ in 0..20 {
            let mut f = [0; FRAME_SAMPLES];
            taps.on_send(3, &mut f, &mixer);
            taps.end_tick(3, &mut |e| sink(e));
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        match &seen[0] {
            MediaEvent::RecordingFailed { call, error, .. } => {
                assert_eq!(*call, 3);
                assert!(error.contains("No space left"), "{error}");
            }
            other => panic!("unexpected {other:?}"),
        }
        taps.set_recorder(None);
        let status = handle.finish(Duration::from_secs(5));
        assert!(status.error.is_some());
        assert_eq!(status.frames_written, 0);
    }

    fn write_wav(path: &Path, samples: &[i16]) {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
    }

    #[test]
    fn a_played_file_replaces_the_microphone_then_stops() {
        let dir = TempDir::new("media-recorder");
        let path = dir.join("two-and-a-half.wav");
        let file: Vec<i16> = (0..FRAME_SAMPLES * 5 / 2).map(|i| 1 + i as i16).collect();
        write_wav(&path, &file);
        let mut taps = Taps::default();
        taps.set_player(Some(Player::open(&path, PlayEnd::Stop).unwrap()));
        let (sink, seen) = events();
        let mixer = Mixer::new();
        let mut out = Vec::new();
        for _ in 0..4 {
            let mut mic = [-5; FRAME_SAMPLES];
            taps.on_send(1, &mut mic, &mixer);
            taps.end_tick(1, &mut |e| sink(e));
            out.extend_from_slice(&mic);
        }
        assert_eq!(
            &out[..file.len()],
            &file[..],
            "the file, not the microphone"
        );
        assert!(out[file.len()..FRAME_SAMPLES * 3].iter().all(|&s| s == 0));
        assert!(
            out[FRAME_SAMPLES * 3..].iter().all(|&s| s == -5),
            "back to the microphone after the file"
        );
        assert!(!taps.is_playing());
        assert_eq!(
            *seen.lock().unwrap(),
            vec![MediaEvent::PlaybackEnded {
                call: 1,
                hangup: false
            }]
        );
    }

    #[test]
    fn exact_frames_end_on_their_last_frame_and_hangup_is_asked_once() {
        let dir = TempDir::new("media-recorder");
        let path = dir.join("two.wav");
        write_wav(&path, &[7; FRAME_SAMPLES * 2]);
        let mut taps = Taps::default();
        taps.set_player(Some(Player::open(&path, PlayEnd::Hangup).unwrap()));
        let (sink, seen) = events();
        let mixer = Mixer::new();
        let mut frames = Vec::new();
        for tick in 0..5 {
            let mut mic = [-5; FRAME_SAMPLES];
            taps.on_send(2, &mut mic, &mixer);
            taps.end_tick(2, &mut |e| sink(e));
            frames.push(mic);
            if tick == 1 {
                assert_eq!(seen.lock().unwrap().len(), 1, "ends with its last frame");
            }
        }
        assert!(frames[..2].iter().all(|f| f.iter().all(|&s| s == 7)));
        // Waiting for the hang-up: silence, not the microphone.
        assert!(frames[2..].iter().all(|f| f.iter().all(|&s| s == 0)));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![MediaEvent::PlaybackEnded {
                call: 2,
                hangup: true
            }]
        );
    }

    #[test]
    fn a_looped_file_never_ends() {
        let dir = TempDir::new("media-recorder");
        let path = dir.join("short.wav");
        let file: Vec<i16> = (0..100).map(|i| i as i16 + 1).collect();
        write_wav(&path, &file);
        let mut player = Player::open(&path, PlayEnd::Loop).unwrap();
        let mut out = Vec::new();
        for _ in 0..10 {
            let mut f = [0; FRAME_SAMPLES];
            assert!(!player.fill(&mut f));
            out.extend_from_slice(&f);
        }
        for (i, &s) in out.iter().enumerate() {
            assert_eq!(s, file[i % file.len()]);
        }
        assert!(Player::open(&dir.join("missing.wav"), PlayEnd::Stop).is_err());
    }

    #[test]
    fn a_file_sink_writes_on_its_thread_and_is_finished_after_close() {
        let dir = TempDir::new("media-recorder");
        let path = dir.join("out.wav");
        let (mut sink, handle) = file_sink(&path).unwrap();
        // Pieces of any length: shorter than a frame, longer than one.
        let samples: Vec<i16> = (0..FRAME_SAMPLES as i16 * 3 + 7).collect();
        sink.write(&samples[..100]).unwrap();
        sink.write(&samples[100..100 + FRAME_SAMPLES * 2]).unwrap();
        sink.write(&samples[100 + FRAME_SAMPLES * 2..]).unwrap();
        sink.close().unwrap();
        let status = handle.finish(Duration::from_secs(5));
        assert_eq!(status.error, None);
        assert_eq!(status.frames_dropped, 0);
        let reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.duration() as usize, samples.len());
        let got: Vec<i16> = reader.into_samples().map(|s| s.unwrap()).collect();
        assert_eq!(got, samples);
    }

    #[test]
    fn a_file_sink_never_waits_for_the_disk() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let (mut sink, handle) =
            file_sink_to(Path::new("stuck.wav"), Box::new(Stuck(gate.clone()))).unwrap();
        let ticks = RECORDER_QUEUE_FRAMES * 3;
        for _ in 0..ticks {
            // A blocking hand-over would hang here for good.
            sink.write(&[1; FRAME_SAMPLES]).unwrap();
        }
        drop(held);
        sink.close().unwrap();
        let status = handle.finish(Duration::from_secs(5));
        assert!(status.frames_dropped > 0, "{status:?}");
        assert_eq!(status.frames_written + status.frames_dropped, ticks as u64);
    }

    #[test]
    fn a_file_sink_reports_a_write_error_once() {
        let (mut sink, handle) = file_sink_to(Path::new("full.wav"), Box::new(Full)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut errors = Vec::new();
        while Instant::now() < deadline && errors.is_empty() {
            if let Err(e) = sink.write(&[0; FRAME_SAMPLES]) {
                errors.push(e.to_string());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for _ in 0..20 {
            if let Err(e) = sink.write(&[0; FRAME_SAMPLES]) {
                errors.push(e.to_string());
            }
        }
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("No space left"), "{errors:?}");
        sink.close().unwrap();
        assert!(handle.finish(Duration::from_secs(5)).error.is_some());
    }
}
