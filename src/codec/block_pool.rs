//! A few worker threads shared by every rebuild that can cut its work into
//! independent blocks (pgzip's). One pool for the process, one thread per
//! core: a hundred concurrent reads queue for the cores instead of each
//! starting threads and holding encoder state of its own. Threads at the
//! lowest CPU priority (background conversions) use a second pool of the
//! same size at that priority.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

const LOWEST: libc::c_int = 19;

/// Linux keeps a nice value per thread: PRIO_PROCESS with a thread id.
fn tid() -> libc::id_t {
    (unsafe { libc::syscall(libc::SYS_gettid) }) as libc::id_t
}

/// Puts the calling thread (and threads it starts later, which inherit its
/// nice value) at the lowest CPU priority; its pool jobs go to the low pool.
pub fn lower_this_thread() {
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid(), LOWEST) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower a background thread's priority");
    }
}

/// The calling thread runs at the lowest priority (set here or inherited).
fn lowered() -> bool {
    (unsafe { libc::getpriority(libc::PRIO_PROCESS, tid()) }) >= LOWEST
}

fn sender() -> &'static Mutex<Sender<Job>> {
    static POOL: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    static LOW: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    if lowered() {
        LOW.get_or_init(|| start_pool("strata-rebuild-low", true))
    } else {
        POOL.get_or_init(|| start_pool("strata-rebuild", false))
    }
}

fn start_pool(name: &str, low: bool) -> Mutex<Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = std::sync::Arc::new(Mutex::new(rx));
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    for i in 0..n {
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                if low {
                    lower_this_thread();
                }
                loop {
                    // The lock is held only while waiting for the next job.
                    let job = match rx.lock().map(|r| r.recv()) {
                        Ok(Ok(job)) => job,
                        _ => return,
                    };
                    job();
                }
            })
            .expect("spawn a rebuild worker");
    }
    Mutex::new(tx)
}

/// Runs `f` on a pool thread; its result arrives on the receiver. If the pool
/// is gone (never, in practice) `f` runs on the caller's thread instead.
pub fn submit<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Receiver<R> {
    let (tx, rx) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    let job = match sender().lock() {
        Ok(s) => match s.send(job) {
            Ok(()) => return rx,
            Err(mpsc::SendError(job)) => job,
        },
        Err(_) => job,
    };
    job();
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_to_their_submitter() {
        let rxs: Vec<_> = (0..50u64).map(|i| submit(move || i * i)).collect();
        let got: Vec<u64> = rxs.into_iter().map(|r| r.recv().unwrap()).collect();
        assert_eq!(got, (0..50u64).map(|i| i * i).collect::<Vec<_>>());
    }
}
