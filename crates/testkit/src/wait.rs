//! Waiting for a condition, with a deadline.
//!
//! A test never sleeps a guessed time and never asserts how long something
//! took: it waits until what it expects is true, and fails only when that
//! has not happened by a generous deadline — a timeout, not a claim about
//! speed.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// How long a test waits for something that must happen. Generous: on a
/// busy machine things are slow, not wrong.
pub const WAIT: Duration = Duration::from_secs(60);

/// The pauses between checks grow from this …
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// … to at most this.
const LONGEST_PAUSE: Duration = Duration::from_millis(200);

/// What a check answers: done (with what it found), or not yet.
///
/// `true`, `Some(value)` and `Ok(value)` are done; `false`, `None` and
/// `Err(state)` are not yet (`state` is shown if time runs out).
pub trait Check {
    /// What a done check found.
    type Output;

    /// `Ok` when done; else what to show if this was the last try.
    fn done(self) -> Result<Self::Output, Option<String>>;
}

impl Check for bool {
    type Output = ();

    fn done(self) -> Result<(), Option<String>> {
        if self { Ok(()) } else { Err(None) }
    }
}

impl<T> Check for Option<T> {
    type Output = T;

    fn done(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Display> Check for Result<T, E> {
    type Output = T;

    fn done(self) -> Result<T, Option<String>> {
        self.map_err(|state| Some(state.to_string()))
    }
}

/// Runs `check` until it is done and answers what it found; panics naming
/// `what` (and the last state the check reported) once `within` has passed.
///
/// ```ignore
/// let offset = eventually(WAIT, "the publication", || async {
///     api.history("chat:1").await["offset"].as_u64().filter(|o| *o > 0)
/// })
/// .await;
/// ```
pub async fn eventually<C, F>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> C::Output
where
    C: Check,
    F: Future<Output = C>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = FIRST_PAUSE;
    loop {
        let last = match check().await.done() {
            Ok(found) => return found,
            Err(last) => last,
        };
        if tokio::time::Instant::now() >= deadline {
            timed_out(within, what, last);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// [`eventually`] for code that is not async (a process, a file).
pub fn eventually_blocking<C: Check>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> C,
) -> C::Output {
    let deadline = std::time::Instant::now() + within;
    let mut pause = FIRST_PAUSE;
    loop {
        let last = match check().done() {
            Ok(found) => return found,
            Err(last) => last,
        };
        if std::time::Instant::now() >= deadline {
            timed_out(within, what, last);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// `future`'s output, or a panic naming `what` once `within` has passed.
pub async fn within<T>(within: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(within, future).await {
        Ok(output) => output,
        Err(_) => timed_out(within, what, None),
    }
}

fn timed_out(within: Duration, what: &str, last: Option<String>) -> ! {
    match last {
        Some(last) => panic!("timed out after {within:?} waiting for {what}; last seen: {last}"),
        None => panic!("timed out after {within:?} waiting for {what}"),
    }
}
