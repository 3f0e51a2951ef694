//! Which worker thread serves a new client connection: the one serving the fewest.
//!
//! Pingora runs each accepted connection's task on a runtime picked at random
//! (`pingora_runtime::current_handle`), and a connection stays on its thread for life. Random
//! placement leaves the threads unevenly loaded: 32 connections on two threads split 19 to 13
//! or worse in three accept bursts of eight (binomially), and every request on the busier
//! thread waits longer, which is what a latency percentile measures. Placing each connection on
//! the thread with the fewest open ones keeps them within one of each other (Envoy's "exact
//! balance" does the same for its listeners).
//!
//! The worker threads are learned as connections arrive: Pingora's random choice lands on each
//! of them within the first few connections, and until then the threads already seen share
//! them. A plain TCP connection then registers with the reactor of the thread chosen here
//! ([`super::reactor`]).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;

use futures_util::FutureExt as _;
use tokio::runtime::Handle;

/// The worker threads seen so far and how many connections each serves.
#[derive(Debug, Default)]
pub struct Placement {
    workers: Mutex<Vec<Worker>>,
}

#[derive(Debug)]
struct Worker {
    thread: ThreadId,
    runtime: Handle,
    open: Arc<AtomicUsize>,
}

/// One connection counted on its thread until it is dropped.
#[derive(Debug)]
struct Placed {
    open: Arc<AtomicUsize>,
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Placement {
    /// Runs `connection` on the thread serving the fewest connections, preferring the calling
    /// one when it is among them (no wake-up of another thread), and counts it there until its
    /// task ends or is dropped. Must be called on a worker thread's runtime.
    pub fn spawn(&self, connection: impl Future<Output = ()> + Send + 'static) {
        let (runtime, open) = self.choose();
        let counted = counted(connection, Placed { open });
        match runtime {
            Some(runtime) => drop(runtime.spawn(counted)),
            None => drop(tokio::spawn(counted)),
        }
    }

    /// The least loaded worker (`None` for the calling one) and its count, already raised.
    fn choose(&self) -> (Option<Handle>, Arc<AtomicUsize>) {
        let here = std::thread::current().id();
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        let current = match workers.iter().position(|w| w.thread == here) {
            Some(index) => index,
            None => {
                workers.push(Worker {
                    thread: here,
                    runtime: Handle::current(),
                    open: Arc::new(AtomicUsize::new(0)),
                });
                workers.len() - 1
            }
        };
        let load = |index: usize| workers[index].open.load(Ordering::Relaxed);
        let least = (0..workers.len())
            .min_by_key(|&index| (load(index), index != current))
            .unwrap_or(current);
        let worker = &workers[least];
        worker.open.fetch_add(1, Ordering::Relaxed);
        let runtime = (least != current).then(|| worker.runtime.clone());
        (runtime, Arc::clone(&worker.open))
    }
}

/// `connection`, counted until it ends or is dropped.
///
/// Not an `async` block awaiting `connection`: a block keeps the future it captured and the
/// future it awaits in separate places, and would hold the connection's state twice for its
/// whole life (1.7 KiB an idle connection).
fn counted(
    connection: impl Future<Output = ()> + Send + 'static,
    placed: Placed,
) -> impl Future<Output = ()> + Send + 'static {
    connection.map(move |()| drop(placed))
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::sync::mpsc;

    /// Two single-threaded runtimes, as Pingora's no-steal runtime has: connections offered
    /// only on the first end up split evenly, and the counts fall as connections end.
    #[test]
    fn connections_go_to_the_thread_serving_the_fewest() {
        let placement = Arc::new(Placement::default());
        let (release, _) = tokio::sync::broadcast::channel::<()>(1);
        let (served_on, mut served) = mpsc::unbounded_channel::<ThreadId>();
        let spawn_runtime = || {
            let (handle, join) = std::sync::mpsc::channel();
            let mut stop = release.subscribe();
            let thread = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                handle.send(runtime.handle().clone()).expect("handle");
                // Until the end of the test, then long enough for the connections to end.
                runtime.block_on(async {
                    let _ = stop.recv().await;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                });
            });
            (join.recv().expect("handle"), thread)
        };
        let (first, first_thread) = spawn_runtime();
        let (second, second_thread) = spawn_runtime();
        // The second thread is seen once, as Pingora's random choice would show it.
        let offer = |runtime: &Handle| {
            let placement = Arc::clone(&placement);
            let served_on = served_on.clone();
            let mut released = release.subscribe();
            let (offered, done) = std::sync::mpsc::channel();
            runtime.spawn(async move {
                placement.spawn(async move {
                    let _ = served_on.send(std::thread::current().id());
                    let _ = released.recv().await;
                });
                let _ = offered.send(());
            });
            done.recv().expect("offered");
        };
        offer(&second);
        for _ in 0..7 {
            offer(&first);
        }
        let mut threads = std::collections::HashMap::<ThreadId, usize>::new();
        for _ in 0..8 {
            let thread = served.blocking_recv().expect("served");
            *threads.entry(thread).or_default() += 1;
        }
        assert_eq!(threads.len(), 2, "both threads serve: {threads:?}");
        assert!(threads.values().all(|&n| n == 4), "{threads:?}");
        let counts = || {
            let workers = placement.workers.lock().expect("lock");
            workers
                .iter()
                .map(|w| w.open.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        };
        assert_eq!(counts(), [4, 4]);
        let _ = release.send(());
        first_thread.join().expect("first thread");
        second_thread.join().expect("second thread");
        assert_eq!(counts(), [0, 0]);
    }

    /// A connection's task holds its future once: the count adds a word or two, not a copy.
    #[test]
    fn a_counted_connection_holds_its_future_once() {
        let connection = async {
            let state = [7u8; 4096];
            tokio::task::yield_now().await;
            std::hint::black_box(state);
        };
        let size = size_of_val(&connection);
        assert!(size >= 4096, "{size}");
        let open = Arc::new(AtomicUsize::new(1));
        let task = counted(
            connection,
            Placed {
                open: Arc::clone(&open),
            },
        );
        let task_size = size_of_val(&task);
        assert!(task_size <= size + 32, "{task_size} for a future of {size}");
        drop(task);
        assert_eq!(
            open.load(Ordering::Relaxed),
            0,
            "a dropped task is no longer counted"
        );
    }
}
