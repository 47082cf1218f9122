//! A few worker threads shared by every rebuild that can cut its work into
//! independent blocks (pgzip's). One pool for the process, one thread per
//! core: a hundred concurrent reads queue for the cores instead of each
//! starting threads and holding encoder state of its own.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

fn sender() -> &'static Mutex<Sender<Job>> {
    static POOL: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..n {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("strata-rebuild-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job.
                    let job = match rx.lock().map(|r| r.recv()) {
                        Ok(Ok(job)) => job,
                        _ => return,
                    };
                    job();
                })
                .expect("spawn a rebuild worker");
        }
        Mutex::new(tx)
    })
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
